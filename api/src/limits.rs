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
/// Most attempts one runner may run at once.
pub const MAX_CONCURRENCY: u32 = 100_000;
/// Most tasks a runner claims ahead of its free slots (`--prefetch`).
pub const MAX_PREFETCH: usize = 1000;
/// Longest job-cache key, in characters (Unicode scalar values).
pub const MAX_CACHE_KEY_CHARS: usize = 512;
/// The default largest task output or job-cache value, in bytes (`tessera server
/// --max-value-kib` sets the server's; a runner adopts the lower of its own and the server's).
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1 << 20;
/// Most cache writes and deletes one attempt may make.
pub const MAX_CACHE_WRITES: usize = 1000;
/// Most keys one cache listing returns.
pub const MAX_CACHE_LIST: u32 = 1000;
/// Longest request target (path and query) the server answers, in bytes. It fits a cache
/// listing at its limits: a prefix and a key to start after of [`MAX_CACHE_KEY_CHARS`] each,
/// every character a 4-byte one, percent-encoded to 12 bytes.
pub const MAX_REQUEST_TARGET_BYTES: usize = 16 * 1024;
const _: () = assert!(2 * MAX_CACHE_KEY_CHARS * 12 + 1024 <= MAX_REQUEST_TARGET_BYTES);

/// How many bytes an input takes as it is stored and carried: its JSON as serde_json writes
/// it (compact; a number as it round-trips, so `1e15` counts as `1000000000000000.0`). Every
/// part measures inputs this way, never by the text a client or a guest happened to send.
pub fn stored_len(value: &Value) -> usize {
    encoded_len(value)
}

/// The length of a wire value's compact JSON, without keeping the encoding.
pub fn encoded_len<T: serde::Serialize + ?Sized>(value: &T) -> usize {
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).expect("wire types serialize");
    count.0
}

/// [`stored_len`] of a JSON text, measured as it streams by, without building its value: a
/// huge input costs no memory to refuse. (A key an object repeats counts each time; the
/// stored value keeps the last, so this never measures less than what is stored.)
pub fn stored_len_of(text: &str) -> Result<usize, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let mut count = Count(0);
    serde_transcode::transcode(&mut de, &mut serde_json::Serializer::new(&mut count))?;
    de.end()?;
    Ok(count.0)
}

/// A writer that only counts.
struct Count(usize);

impl std::io::Write for Count {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(bytes.len());
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Checks an input's size as stored ([`stored_len`]) against `max` bytes; its size if it fits.
pub fn check_input_size(value: &Value, max: usize) -> Result<usize, String> {
    check_stored_len(stored_len(value), max)
}

/// Checks a size as stored against `max` bytes, in the words every part uses.
pub fn check_stored_len(len: usize, max: usize) -> Result<usize, String> {
    if len > max {
        return Err(format!(
            "its input of {} (as stored: compact JSON) exceeds the limit of {} per task; pass \
             large data by reference (a URL or object key) instead",
            human_bytes(len),
            human_bytes(max)
        ));
    }
    Ok(len)
}

/// Checks one subtask of an attempt as the server records it: `position` is its place among
/// all the attempt's subtasks, and each dependency must name an earlier one, once; its cluster
/// a valid name; its input within [`MAX_INPUT_DEPTH`] and `max_input` bytes as stored. Returns
/// the input's stored size. The host checks a submission with this before the guest's call
/// returns, so that the server never refuses what the host accepted.
pub fn check_subtask(
    position: usize,
    spec: &crate::SubtaskSpec,
    max_input: usize,
) -> Result<usize, String> {
    let i = position;
    if let Some(&d) = spec.depends_on.iter().find(|&&d| d as usize >= i) {
        return Err(format!(
            "subtask {i} depends on {d}, which is not an earlier subtask of the same attempt"
        ));
    }
    let mut deps = spec.depends_on.clone();
    deps.sort_unstable();
    if let Some(w) = deps.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("subtask {i} lists dependency {} twice", w[0]));
    }
    if let Some(c) = &spec.cluster {
        check_name("cluster", c).map_err(|e| format!("subtask {i}: {e}"))?;
    }
    crate::TaskIdentifier::new(spec.identifier.name.clone(), spec.identifier.version)
        .map_err(|e| format!("subtask {i}: {e}"))?;
    let named = |e: String| format!("subtask {i} ({}): {e}", spec.identifier);
    check_input_depth(&spec.input).map_err(named)?;
    check_input_size(&spec.input, max_input).map_err(named)
}

/// Checks a cache listing's prefix and the key it starts after as keys are checked (a prefix
/// may be empty): the host refuses what the server would, with the same words.
pub fn check_cache_listing(prefix: &str, after: Option<&str>) -> Result<(), String> {
    for (what, text) in [("prefix", prefix), ("after", after.unwrap_or(""))] {
        if !text.is_empty() {
            check_cache_key(text).map_err(|why| format!("{what}: {why}"))?;
        }
    }
    Ok(())
}

/// Renders a byte count for people: `1 byte`, `512 bytes`, `1.5 KiB`, `3 MiB`.
pub fn human_bytes(bytes: usize) -> String {
    const UNITS: [&str; 3] = ["KiB", "MiB", "GiB"];
    if bytes == 1 {
        return "1 byte".into();
    }
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64;
    let mut unit = "bytes";
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = u;
    }
    if value.fract() == 0.0 {
        format!("{value:.0} {unit}")
    } else {
        format!("{value:.1} {unit}")
    }
}

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
    fn inputs_are_measured_as_stored_not_as_sent() {
        let sent = "[1e15,1e15, 1e15]";
        let value: Value = serde_json::from_str(sent).unwrap();
        let stored = serde_json::to_string(&value).unwrap();
        assert_eq!(
            stored,
            "[1000000000000000.0,1000000000000000.0,1000000000000000.0]"
        );
        assert_eq!(stored_len(&value), stored.len());
        assert_eq!(stored_len_of(sent).unwrap(), stored.len());
        assert!(stored_len_of("[1, 2").is_err() && stored_len_of("1 2").is_err());
        assert!(stored_len(&value) > sent.len());
        assert_eq!(check_input_size(&value, stored.len()), Ok(stored.len()));
        let refused = check_input_size(&value, sent.len()).unwrap_err();
        assert!(refused.contains("58 bytes (as stored"), "{refused}");
        // Padding a client sent does not count against it.
        let padded: Value = serde_json::from_str("  {  \"a\" :  1 }  ").unwrap();
        assert_eq!(stored_len(&padded), r#"{"a":1}"#.len());
    }

    #[test]
    fn a_subtask_is_checked_as_the_server_records_it() {
        let spec = |deps: Vec<u32>, input: Value| crate::SubtaskSpec {
            identifier: crate::TaskIdentifier::parse("Leaf", "v1.0").unwrap(),
            input,
            display: None,
            depends_on: deps,
            max_retries: 0,
            cluster: None,
        };
        assert_eq!(check_subtask(2, &spec(vec![0, 1], json!([1])), 10), Ok(3));
        let later = check_subtask(1, &spec(vec![1], json!(1)), 10).unwrap_err();
        assert!(later.contains("not an earlier subtask"), "{later}");
        let twice = check_subtask(3, &spec(vec![0, 0], json!(1)), 10).unwrap_err();
        assert_eq!(twice, "subtask 3 lists dependency 0 twice");
        let big = check_subtask(0, &spec(vec![], json!("x".repeat(20))), 10).unwrap_err();
        assert!(
            big.starts_with("subtask 0 (Leaf@v1.0): its input of 22 bytes"),
            "{big}"
        );
    }

    #[test]
    fn cache_listings_check_prefix_and_start_as_keys() {
        assert!(check_cache_listing("", None).is_ok());
        assert!(check_cache_listing(&"😀".repeat(512), Some(&"語".repeat(512))).is_ok());
        let control = check_cache_listing("a\u{1}", None).unwrap_err();
        assert!(
            control.starts_with("prefix: ") && control.contains("control"),
            "{control}"
        );
        let long = check_cache_listing("a", Some(&"k".repeat(513))).unwrap_err();
        assert!(long.starts_with("after: "), "{long}");
    }

    #[test]
    fn human_bytes_picks_a_unit() {
        assert_eq!(human_bytes(1), "1 byte");
        assert_eq!(human_bytes(512), "512 bytes");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 20), "3 MiB");
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
