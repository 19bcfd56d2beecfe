//! One set of limits, shared by the server, the runner host and the CLI, so that whatever one
//! part accepts every other part can carry and read.
//!
//! A task input travels inside a claim answer and, as a subtask, inside a report; each wraps it
//! in a few levels of JSON. JSON readers refuse documents nested past 128 levels, so an input
//! may nest at most [`MAX_INPUT_DEPTH`] levels, well inside that on every path.

use serde_json::Value;

/// How deeply a task input (a job's or a subtask's) may nest arrays and objects.
pub const MAX_INPUT_DEPTH: usize = 64;
/// Longest failure reason or error message kept, in bytes; longer ones are cut.
pub const MAX_REASON_BYTES: usize = 16 * 1024;
/// Longest display name kept, in bytes; longer ones are cut.
pub const MAX_DISPLAY_BYTES: usize = 256;
/// Longest progress label kept, in bytes.
pub const MAX_LABEL_BYTES: usize = 128;
/// Most progress indicators one attempt may create.
pub const MAX_PROGRESS_LABELS: usize = 64;
/// Longest job, cluster or runner name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Most tasks one claim may ask for.
pub const MAX_CLAIM: u32 = 1000;
/// Most task identifiers one runner may serve.
pub const MAX_IDENTIFIERS: usize = 1000;
/// Longest job-cache key, in characters (Unicode scalar values).
pub const MAX_CACHE_KEY_CHARS: usize = 512;
/// The default largest task output or job-cache value, in bytes (`tessera server
/// --max-value-kib` sets the server's; a runner adopts the lower of its own and the server's).
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1 << 20;
/// Most cache writes and deletes one attempt may make.
pub const MAX_CACHE_WRITES: usize = 1000;
/// Most keys one cache listing returns.
pub const MAX_CACHE_LIST: u32 = 1000;

/// Checks a job-cache key: 1 to [`MAX_CACHE_KEY_CHARS`] characters, none of them a control character.
pub fn check_cache_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("a cache key may not be empty".into());
    }
    let chars = key.chars().count();
    if chars > MAX_CACHE_KEY_CHARS {
        return Err(format!(
            "the cache key {} is {chars} characters long; keys may have at most \
             {MAX_CACHE_KEY_CHARS}",
            elide(key, 64)
        ));
    }
    if key.chars().any(char::is_control) {
        return Err(format!(
            "the cache key {} holds a control character; use printable text",
            elide(key, 64)
        ));
    }
    Ok(())
}

/// How deeply `value` nests arrays and objects (a scalar is 0, `[]` and `[1]` are 1).
pub fn json_depth(value: &Value) -> usize {
    // Iterative: the depth of a hostile document must not cost stack.
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        match v {
            Value::Array(items) => {
                deepest = deepest.max(depth + 1);
                stack.extend(items.iter().map(|i| (i, depth + 1)));
            }
            Value::Object(map) => {
                deepest = deepest.max(depth + 1);
                stack.extend(map.values().map(|i| (i, depth + 1)));
            }
            _ => {}
        }
    }
    deepest
}

/// Why an input is refused, if it nests too deeply.
pub fn check_input_depth(value: &Value) -> Result<(), String> {
    let depth = json_depth(value);
    if depth > MAX_INPUT_DEPTH {
        return Err(format!(
            "the input nests {depth} levels deep; at most {MAX_INPUT_DEPTH} are allowed"
        ));
    }
    Ok(())
}

/// Whether a guest's error code marks its failure permanent: `permanent` or `permanent:…`
/// (the convention of `tessera:task@0.1.0`'s `task-error`).
pub fn is_permanent_code(code: &str) -> bool {
    code == "permanent" || code.starts_with("permanent:")
}

/// Checks a job, cluster or runner name: 1 to [`MAX_NAME_CHARS`] characters, not blank (in
/// the sense of JSON Schema's `\s`, as the OpenAPI document states it), no control characters.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let blank = name.chars().all(|c| c.is_whitespace() || c == '\u{feff}');
    if blank || name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(format!(
            "{what} {} is not valid: use 1 to {MAX_NAME_CHARS} printable characters",
            elide(name, 64)
        ));
    }
    Ok(())
}

/// `text` cut to at most `max` bytes (on a character boundary), with a note of how much was
/// cut when anything was.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let note = format!(" … [{} bytes cut]", text.len() - max);
    let mut at = max.saturating_sub(note.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    format!("{}{note}", &text[..at])
}

/// Whether a character could change what a terminal shows beyond itself: C0 and C1 controls
/// (ESC, BEL, CR, NUL, …), and the invisible or direction-changing format characters that can
/// disguise text.
fn drives_terminals(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// Text that came from a guest or a client, made safe for a terminal or a log line: control
/// and format characters escaped (`\n`, `\u{1b}`, …) and at most about `max` bytes of it
/// shown, then `… [N bytes]` with its full length.
pub fn escape(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max) + 16);
    for c in text.chars() {
        if out.len() >= max {
            out.push_str(&format!("… [{} bytes]", text.len()));
            return out;
        }
        if drives_terminals(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// [`escape`]d and quoted, for quoting a value inside a message.
pub fn elide(text: &str, max: usize) -> String {
    format!("\"{}\"", escape(text, max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cache_keys_are_bounded_printable_text() {
        assert!(check_cache_key("chunks/0001").is_ok());
        assert!(check_cache_key(&"k".repeat(MAX_CACHE_KEY_CHARS)).is_ok());
        assert!(check_cache_key("").unwrap_err().contains("empty"));
        let long = check_cache_key(&"k".repeat(MAX_CACHE_KEY_CHARS + 1)).unwrap_err();
        assert!(long.contains("513 characters"), "{long}");
        assert!(
            check_cache_key(&"é".repeat(MAX_CACHE_KEY_CHARS)).is_ok(),
            "characters, not bytes"
        );
        let control = check_cache_key("a\u{1b}[2Jb").unwrap_err();
        assert!(
            control.contains("control") && !control.contains('\u{1b}'),
            "{control}"
        );
    }

    #[test]
    fn depth_counts_nesting() {
        assert_eq!(json_depth(&json!(1)), 0);
        assert_eq!(json_depth(&json!([])), 1);
        assert_eq!(json_depth(&json!({"a": [1, {"b": []}]})), 4);
        let mut deep = json!(0);
        for _ in 0..MAX_INPUT_DEPTH {
            deep = json!([deep]);
        }
        assert!(check_input_depth(&deep).is_ok());
        let deeper = json!({ "x": deep });
        let err = check_input_depth(&deeper).unwrap_err();
        assert!(err.contains("65 levels"), "{err}");
    }

    #[test]
    fn cut_keeps_within_the_limit_and_says_so() {
        assert_eq!(cut("short", 10), "short");
        let long = "é".repeat(1000);
        let c = cut(&long, 100);
        assert!(c.len() <= 100, "{}", c.len());
        assert!(c.ends_with(&format!("[{} bytes cut]", 2000 - 100)), "{c}");
    }

    #[test]
    fn names_refuse_blank_long_and_control_text() {
        assert!(check_name("cluster", "gpu-1").is_ok());
        assert!(check_name("cluster", " ").is_err());
        assert!(check_name("cluster", &"x".repeat(201)).is_err());
        let err = check_name("cluster", "a\x1b[2Jb").unwrap_err();
        assert!(err.contains("\\u{1b}"), "{err}");
        assert!(!err.contains('\x1b'));
    }

    #[test]
    fn elide_escapes_and_shortens() {
        assert_eq!(elide("a\nb", 10), "\"a\\nb\"");
        assert_eq!(elide(&"x".repeat(20), 5), "\"xxxxx… [20 bytes]\"");
    }

    #[test]
    fn guest_text_cannot_drive_the_terminal() {
        let hostile = "ok\x1b[2J\x1b]0;title\x07\r\nFORGED 12:00 INFO line\0\u{202e}txt.exe\u{9b}";
        let shown = escape(hostile, 1000);
        assert!(
            !shown.chars().any(drives_terminals),
            "nothing a terminal acts on is left: {shown:?}"
        );
        assert!(
            shown.contains("\\u{1b}[2J") && shown.contains("\\r\\nFORGED"),
            "{shown}"
        );
        assert!(shown.contains("\\u{202e}txt.exe"), "{shown}");
        assert_eq!(
            escape("plain text, ünïcode ✓", 100),
            "plain text, ünïcode ✓"
        );
        let cut = escape(&"x".repeat(10_000), 100);
        assert!(
            cut.starts_with(&"x".repeat(100)) && cut.ends_with("… [10000 bytes]"),
            "{cut}"
        );
    }
}
