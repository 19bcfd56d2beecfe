//! `tracing`-style logging macros: `info!(ctx, key = value, "message {}", arg)`. Integers,
//! floats and booleans travel typed ([`FieldValue`]); anything else that implements `Display`
//! travels as its text.

use crate::FieldValue;

impl std::fmt::Display for FieldValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldValue::Text(t) => f.write_str(t),
            FieldValue::Signed(n) => write!(f, "{n}"),
            FieldValue::Unsigned(n) => write!(f, "{n}"),
            FieldValue::Float(x) => write!(f, "{x}"),
            FieldValue::Boolean(b) => write!(f, "{b}"),
        }
    }
}

impl From<&str> for FieldValue {
    fn from(text: &str) -> Self {
        FieldValue::Text(text.to_string())
    }
}

impl From<String> for FieldValue {
    fn from(text: String) -> Self {
        FieldValue::Text(text)
    }
}

#[doc(hidden)]
pub mod __field {
    //! How a macro field's value becomes a [`FieldValue`]: typed for numbers and booleans
    //! (found first, by auto-ref), as text for anything else that implements `Display`.
    use crate::FieldValue;

    /// A field's value, borrowed.
    pub struct Wrap<'a, T: ?Sized>(pub &'a T);

    /// Numbers and booleans: typed.
    pub trait Typed {
        fn field_value(&self) -> FieldValue;
    }

    /// Anything else: its text.
    pub trait Shown {
        fn field_value(&self) -> FieldValue;
    }

    impl<T: std::fmt::Display + ?Sized> Shown for Wrap<'_, T> {
        fn field_value(&self) -> FieldValue {
            FieldValue::Text(self.0.to_string())
        }
    }

    macro_rules! typed {
        ($variant:ident as $wide:ty: $($t:ty),+) => {$(
            impl Typed for &Wrap<'_, $t> {
                fn field_value(&self) -> FieldValue {
                    FieldValue::$variant(<$wide>::from(*self.0))
                }
            }
            impl Typed for &Wrap<'_, &$t> {
                fn field_value(&self) -> FieldValue {
                    FieldValue::$variant(<$wide>::from(**self.0))
                }
            }
        )+};
    }
    typed!(Signed as i64: i8, i16, i32, i64);
    typed!(Unsigned as u64: u8, u16, u32, u64);
    typed!(Float as f64: f32, f64);
    typed!(Boolean as bool: bool);

    impl Typed for &Wrap<'_, usize> {
        fn field_value(&self) -> FieldValue {
            FieldValue::Unsigned(*self.0 as u64)
        }
    }

    impl Typed for &Wrap<'_, isize> {
        fn field_value(&self) -> FieldValue {
            FieldValue::Signed(*self.0 as i64)
        }
    }
}

/// Logs at a level: `log!(ctx, Level::Info, index = 3, "message {}", arg)`.
#[macro_export]
macro_rules! log {
    (@fields $ctx:expr, $level:expr, [$($acc:tt)*] $key:ident = $value:expr, $($rest:tt)+) => {
        $crate::log!(@fields $ctx, $level,
            [$($acc)* (::std::stringify!($key), {
                #[allow(unused_imports)]
                use $crate::__field::{Shown as _, Typed as _};
                (&&$crate::__field::Wrap(&$value)).field_value()
            }),]
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
