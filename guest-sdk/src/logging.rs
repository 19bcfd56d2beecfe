//! `tracing`-style logging macros: `info!(ctx, key = value, "message {}", arg)`.

/// Logs at a level: `log!(ctx, Level::Info, index = 3, "message {}", arg)`.
#[macro_export]
macro_rules! log {
    (@fields $ctx:expr, $level:expr, [$($acc:tt)*] $key:ident = $value:expr, $($rest:tt)+) => {
        $crate::log!(@fields $ctx, $level,
            [$($acc)* (::std::stringify!($key), ::std::string::ToString::to_string(&$value)),]
            $($rest)+)
    };
    (@fields $ctx:expr, $level:expr, [$($acc:tt)*] $($fmt:tt)+) => {
        $ctx.log($level, &::std::format!($($fmt)+), &[$($acc)*])
    };
    ($ctx:expr, $level:expr, $($rest:tt)+) => {
        $crate::log!(@fields $ctx, $level, [] $($rest)+)
    };
}

/// Logs at trace level: `trace!(ctx, key = value, "message")`.
#[macro_export]
macro_rules! trace {
    ($ctx:expr, $($rest:tt)+) => { $crate::log!($ctx, $crate::Level::Trace, $($rest)+) };
}

/// Logs at debug level: `debug!(ctx, key = value, "message")`.
#[macro_export]
macro_rules! debug {
    ($ctx:expr, $($rest:tt)+) => { $crate::log!($ctx, $crate::Level::Debug, $($rest)+) };
}

/// Logs at info level: `info!(ctx, index = self.index, "Starting sleep task")`.
#[macro_export]
macro_rules! info {
    ($ctx:expr, $($rest:tt)+) => { $crate::log!($ctx, $crate::Level::Info, $($rest)+) };
}

/// Logs at warn level: `warn!(ctx, key = value, "message")`.
#[macro_export]
macro_rules! warn {
    ($ctx:expr, $($rest:tt)+) => { $crate::log!($ctx, $crate::Level::Warn, $($rest)+) };
}

/// Logs at error level: `error!(ctx, key = value, "message")`.
#[macro_export]
macro_rules! error {
    ($ctx:expr, $($rest:tt)+) => { $crate::log!($ctx, $crate::Level::Error, $($rest)+) };
}
