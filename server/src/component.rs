//! What the server checks of a component before it stores it, without compiling it (the server
//! never links wasmtime): that the bytes are a valid WebAssembly component, that it exports
//! the task interface at a version the runners serve, and that it imports only what the
//! runner host provides. `tessera deploy` also loads the component in the sandbox before it
//! uploads it; this check is for every other client.

use sha2::{Digest, Sha256};
use wasmparser::{Encoding, Parser, Payload, Validator, WasmFeatures};

/// The task interface a component must export: one of these versions (the runner host serves
/// both contracts).
pub const TASKS_EXPORTS: [&str; 2] = ["tessera:task/tasks@0.2.0", "tessera:task/tasks@0.1.0"];

/// `sha256:` and the hex SHA-256 of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut out = String::with_capacity(71);
    out.push_str(tessera_api::component::DIGEST_PREFIX);
    for b in hash {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Whether the runner host provides an import of this name: the Tessera host interfaces of
/// `tessera:task` 0.1 and 0.2 and WASI 0.2 (sockets and files are linked but refused at run
/// time).
fn provided(import: &str) -> bool {
    let Some((package, version)) = import.split_once('@') else {
        return false;
    };
    let tessera = (["tessera:task/host", "tessera:task/types"].contains(&package)
        && (version.starts_with("0.1.") || version.starts_with("0.2.")))
        || (package == "tessera:task/cache" && version.starts_with("0.2."));
    let wasi = package.split_once('/').is_some_and(|(namespace, _)| {
        [
            "wasi:cli",
            "wasi:clocks",
            "wasi:filesystem",
            "wasi:io",
            "wasi:random",
            "wasi:sockets",
        ]
        .contains(&namespace)
    }) && version.starts_with("0.2.");
    tessera || wasi
}

const BUILD_HINT: &str = "build it with the tessera-guest SDK for wasm32-wasip2 \
    (cargo build --release --target wasm32-wasip2)";

/// Checks that `bytes` are a task component this server's runners can run; the error says
/// what is wrong and what to do.
pub fn check(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(format!("it is not a WebAssembly file; {BUILD_HINT}"));
    }
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| format!("it does not parse: {e}"))?;
        match payload {
            Payload::Version { encoding, .. } => {
                if depth == 0 && encoding == Encoding::Module {
                    return Err(format!(
                        "it is a core WebAssembly module, not a component (was it built for \
                         wasm32-unknown-unknown or wasm32-wasip1?); {BUILD_HINT}"
                    ));
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    let import = import.map_err(|e| format!("it does not parse: {e}"))?;
                    imports.push(import.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    let export = export.map_err(|e| format!("it does not parse: {e}"))?;
                    exports.push(export.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Validator::new_with_features(WasmFeatures::default())
        .validate_all(bytes)
        .map_err(|e| format!("it does not validate: {e}"))?;
    let runs = TASKS_EXPORTS.join(" or ");
    if !exports.iter().any(|e| TASKS_EXPORTS.contains(&e.as_str())) {
        let other = exports
            .iter()
            .find(|e| e.starts_with("tessera:task/tasks@"))
            .map(|e| {
                format!(
                    "it exports {}, a version of the task interface this server does not run \
                     (it runs {runs}); build it against this release's tessera-guest",
                    tessera_api::limits::escape(e, 100)
                )
            });
        return Err(other.unwrap_or_else(|| {
            let listed = if exports.is_empty() {
                "nothing".to_string()
            } else {
                tessera_api::limits::elide(&exports.join(", "), 300)
            };
            format!(
                "it does not export {runs} (it exports {listed}): it is not a Tessera task \
                 component; {BUILD_HINT}"
            )
        }));
    }
    if let Some(import) = imports.iter().find(|i| !provided(i)) {
        return Err(format!(
            "it imports {}, which the Tessera runner host does not provide; task components \
             may import only tessera:task (0.1 or 0.2) and WASI 0.2",
            tessera_api::limits::elide(import, 200)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_sha256_in_hex() {
        assert_eq!(
            digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(tessera_api::component::is_digest(&digest(b"x")));
    }

    #[test]
    fn imports_the_host_provides() {
        assert!(provided("tessera:task/host@0.1.0"));
        assert!(provided("tessera:task/host@0.2.0"));
        assert!(provided("tessera:task/cache@0.2.0"));
        assert!(!provided("tessera:task/cache@0.1.0"));
        assert!(!provided("tessera:task/host@0.3.0"));
        assert!(provided("wasi:io/streams@0.2.6"));
        assert!(provided("wasi:cli/environment@0.2.0"));
        assert!(!provided("wasi:http/outgoing-handler@0.2.0"));
        assert!(!provided("wasi:io/streams@0.3.0"));
        assert!(!provided("tessera:task/host@0.9.0"));
        assert!(!provided("evil"));
    }

    #[test]
    fn what_is_not_a_component_is_told_apart() {
        assert!(
            check(b"hello")
                .unwrap_err()
                .contains("not a WebAssembly file")
        );
        assert!(
            check(b"\0asm\x01\0\0\0")
                .unwrap_err()
                .contains("core WebAssembly module")
        );
        // An empty component exports nothing.
        let empty = check(b"\0asm\x0d\0\x01\0").unwrap_err();
        assert!(empty.contains("exports nothing"), "{empty}");
        assert!(
            check(b"\0asm\x0d\0\x01\0\x07")
                .unwrap_err()
                .contains("does not parse")
        );
    }
}
