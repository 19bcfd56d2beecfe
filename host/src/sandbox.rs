//! [`Host`]: one per process; holds the engine, the linker (WASI and both `tessera:task`
//! contracts) and the component cache.

use wasmtime::Engine;
use wasmtime::component::Linker;

use crate::bindings::{v1, v2};
use crate::cache::ComponentCache;
use crate::engine::{AllocationInUse, EngineError, EpochTicker, HostConfig, build_engine};
use crate::state::{AttemptState, CacheInterface, HostInterface};

/// The sandbox host: loads task components and runs task attempts in them.
///
/// Create one per process and share it (it is `Send + Sync`); every attempt gets a fresh
/// store and instance.
pub struct Host {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<AttemptState>,
    pub(crate) cache: Option<ComponentCache>,
    allocation: AllocationInUse,
    _ticker: EpochTicker,
}

impl Host {
    /// Builds the engine, links WASI and the Tessera host functions, and starts the epoch ticker.
    pub fn new(config: HostConfig) -> Result<Host, EngineError> {
        let (engine, allocation) = build_engine(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(EngineError::Config)?;
        // Both contracts: a component imports one or the other. Each interface is linked to
        // the attempt's view of it.
        let host = AttemptState::host_view;
        v2::tessera::task::types::add_to_linker::<_, HostInterface>(&mut linker, host)
            .and_then(|()| {
                v2::tessera::task::host::add_to_linker::<_, HostInterface>(&mut linker, host)
            })
            .and_then(|()| {
                v2::tessera::task::cache::add_to_linker::<_, CacheInterface>(
                    &mut linker,
                    AttemptState::cache_view,
                )
            })
            .and_then(|()| {
                v1::tessera::task::types::add_to_linker::<_, HostInterface>(&mut linker, host)
            })
            .and_then(|()| {
                v1::tessera::task::host::add_to_linker::<_, HostInterface>(&mut linker, host)
            })
            .map_err(EngineError::Config)?;
        let ticker = EpochTicker::start(engine.clone(), config.epoch_tick);
        Ok(Host {
            engine,
            linker,
            cache: config
                .cache_dir
                .map(|dir| ComponentCache::new(dir, config.cache_max_bytes)),
            allocation,
            _ticker: ticker,
        })
    }

    /// The allocation strategy in use (pooling may have fallen back to on demand).
    pub fn allocation(&self) -> AllocationInUse {
        self.allocation
    }

    /// The compiled-component cache directory, if caching is on.
    pub fn cache_dir(&self) -> Option<&std::path::Path> {
        self.cache.as_ref().map(|c| c.dir())
    }
}
