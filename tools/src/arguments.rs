//! A job's arguments as `zodiac jobs put` takes them: one JSON object, given as its
//! text, as `@FILE` (the file's content) or as `-` (standard input), so that
//! arguments too long for a command line ("Argument list too long") can be passed.
//!
//! The names a job and a worker are given (handler, queue) are checked against
//! the job layer's limits here too, as the command line is parsed.
//!
//! Invariant: an error names where the text came from and quotes at most
//! `QUOTED_CHARS_MAX` characters of it, so a large bad file gives one short line.

use serde_json::Value;

/// Most characters of a malformed argument text an error message quotes.
const QUOTED_CHARS_MAX: usize = 80;

/// Parses a job's arguments: one JSON object, given as its text, as `@FILE` (the
/// file's content) or as `-` (standard input's).
pub fn parse(text: &str) -> Result<Value, String> {
    let (source, content) = if text == "-" {
        let mut content = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut content)
            .map_err(|e| format!("cannot read the arguments from standard input: {e}"))?;
        ("standard input".to_string(), content)
    } else if let Some(file) = text.strip_prefix('@') {
        let content = std::fs::read_to_string(file).map_err(|e| {
            format!("cannot read the arguments file {file}: {e} (name an existing JSON file)")
        })?;
        (format!("the arguments file {file}"), content)
    } else {
        return parse_arguments_text(text, "the arguments");
    };
    parse_arguments_text(&content, &format!("the arguments in {source}"))
}

/// Parses a queue name (`''` is the default queue): at most
/// `QUEUE_NAME_BYTES_MAX` bytes, checked before anything is opened, so that a
/// worker does not print "ready" and then fail every poll on it, and a put into
/// a new data file does not fail after creating the file.
pub fn queue_name(text: &str) -> Result<String, String> {
    let max = zodiac_async::limits::QUEUE_NAME_BYTES_MAX;
    if text.len() > max {
        return Err(format!(
            "the queue name is {} bytes, over the limit of {max} bytes",
            text.len()
        ));
    }
    Ok(text.to_string())
}

/// Parses a handler name: not empty, at most `HANDLER_NAME_BYTES_MAX` bytes
/// (checked before the put opens, and perhaps creates, its store).
pub fn handler_name(text: &str) -> Result<String, String> {
    let max = zodiac_async::limits::HANDLER_NAME_BYTES_MAX;
    if text.is_empty() {
        return Err(
            "the handler name is empty: name the handler that runs the job \
                    (built-in: echo, sleep, fail, incr, shell)"
                .to_string(),
        );
    }
    if text.len() > max {
        return Err(format!(
            "the handler name is {} bytes, over the limit of {max} bytes",
            text.len()
        ));
    }
    Ok(text.to_string())
}

/// Parses `text`, named `what` in errors, as one JSON object.
fn parse_arguments_text(text: &str, what: &str) -> Result<Value, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(other) => {
            let kind = match other {
                Value::Array(_) => "an array".to_string(),
                Value::String(_) => "a string".to_string(),
                other => quoted(&other.to_string()),
            };
            Err(format!("{what} must be a JSON object, not {kind}"))
        }
        Err(e) => Err(format!("{what} are not JSON ({e}): {}", quoted(text))),
    }
}

/// `text` quoted, cut to its first `QUOTED_CHARS_MAX` characters.
fn quoted(text: &str) -> String {
    match text.char_indices().nth(QUOTED_CHARS_MAX) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}...", &text[..end]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_quote_only_the_start_of_a_long_text() {
        let long = format!("{{\"value\": \"{}", "z".repeat(10_000));
        let e = parse(&long).unwrap_err();
        assert!(e.starts_with("the arguments are not JSON"), "{e}");
        assert!(e.len() < 300, "{} bytes", e.len());
        assert!(e.ends_with("..."), "{e}");
    }

    #[test]
    fn names_are_checked_at_their_limits() {
        let at = "q".repeat(zodiac_async::limits::QUEUE_NAME_BYTES_MAX);
        assert_eq!(queue_name(&at).unwrap(), at);
        assert!(
            queue_name(&format!("{at}q"))
                .unwrap_err()
                .contains("over the limit")
        );
        assert_eq!(queue_name("").unwrap(), "");
        let at = "h".repeat(zodiac_async::limits::HANDLER_NAME_BYTES_MAX);
        assert_eq!(handler_name(&at).unwrap(), at);
        assert!(
            handler_name(&format!("{at}h"))
                .unwrap_err()
                .contains("over the limit")
        );
        assert!(handler_name("").unwrap_err().contains("empty"));
    }

    #[test]
    fn only_an_object_is_accepted() {
        assert!(parse("[1]").unwrap_err().contains("not an array"));
        assert_eq!(parse(r#"{"a": 1}"#).unwrap()["a"], 1);
    }
}
