//! The worker's built-in handlers (cli.md): `echo`, `sleep`, `fail`, `incr` and,
//! only when allowed, `shell`.
//!
//! Invariant: a built-in job's arguments are one JSON object, stored as a postcard
//! string of its JSON text; its value is the JSON text of the result, stored the same
//! way, so `zodiac jobs show` can print both as JSON. Malformed arguments are a user
//! error of the job, never a crash of the worker.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use zodiac_async::{HandlerError, Handlers, JobContext};
use zodiac_objects::{Counter, PRef};

/// Root entries of `incr` counters are named this, followed by the counter's name.
pub const COUNTER_ROOT_PREFIX: &str = "zodiac.counter.";
/// Longest counter name, in bytes.
pub const COUNTER_NAME_BYTES_MAX: usize = 200;
/// Most bytes of each of stdout and stderr a `shell` job keeps.
pub const SHELL_OUTPUT_BYTES_MAX: usize = 64 * 1024;
/// A `shell` job's timeout unless its arguments name one.
pub const SHELL_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);
/// Longest a `sleep` job may sleep.
pub const SLEEP_MS_MAX: u64 = 24 * 3600 * 1000;

fn user_error(message: impl Into<String>) -> HandlerError {
    message.into().into()
}

/// The JSON object in a job's argument text.
fn object(text: &str, handler: &str) -> Result<serde_json::Map<String, Value>, HandlerError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(user_error(format!(
            "{handler}: the arguments must be a JSON object, not {other}"
        ))),
        Err(e) => Err(user_error(format!(
            "{handler}: the arguments are not JSON: {e}"
        ))),
    }
}

fn integer(
    args: &serde_json::Map<String, Value>,
    key: &str,
    handler: &str,
) -> Result<Option<i64>, HandlerError> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| user_error(format!("{handler}: \"{key}\" must be an integer, not {v}"))),
    }
}

fn echo(args: &str) -> Result<String, HandlerError> {
    let args = object(args, "echo")?;
    Ok(args
        .get("value")
        .cloned()
        .unwrap_or(Value::Null)
        .to_string())
}

fn sleep(args: &str) -> Result<String, HandlerError> {
    let args = object(args, "sleep")?;
    let ms = integer(&args, "ms", "sleep")?.unwrap_or(0);
    let ms = u64::try_from(ms)
        .ok()
        .filter(|ms| *ms <= SLEEP_MS_MAX)
        .ok_or_else(|| {
            user_error(format!(
                "sleep: \"ms\" must be 0..={SLEEP_MS_MAX}, not {ms}"
            ))
        })?;
    std::thread::sleep(Duration::from_millis(ms));
    Ok(ms.to_string())
}

fn fail(args: &str) -> Result<String, HandlerError> {
    let args = object(args, "fail")?;
    let message = match args.get("message") {
        None => "failed as asked".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    Err(user_error(message))
}

/// Adds `by` (default 1) to the counter named `counter`, in the job's transaction.
fn incr(ctx: &mut JobContext<'_, '_>, args: &str) -> Result<String, HandlerError> {
    let args = object(args, "incr")?;
    let name = match args.get("counter") {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= COUNTER_NAME_BYTES_MAX => s.clone(),
        other => {
            return Err(user_error(format!(
                "incr: \"counter\" must be a name of 1..={COUNTER_NAME_BYTES_MAX} bytes, not {}",
                other.map_or("nothing".to_string(), Value::to_string)
            )));
        }
    };
    let by = integer(&args, "by", "incr")?.unwrap_or(1);
    let key = format!("{COUNTER_ROOT_PREFIX}{name}");
    // `Counter::add` wraps on overflow (its merges refuse to); a job never may.
    if let Some(counter) = ctx.tx().root_entry::<Counter>(&key)? {
        let value = ctx.tx().get(&counter)?.value();
        if value.checked_add(by).is_none() {
            return Err(user_error(format!(
                "incr: counter {name:?} is {value}; adding {by} would overflow a 64-bit \
                 integer ({}..={}); the counter is unchanged",
                i64::MIN,
                i64::MAX
            )));
        }
    }
    Ok(add_to_counter(ctx.tx(), &name, by)?.to_string())
}

/// Adds `by` to the counter `name` (created at 0 when missing) in `tx`; returns
/// its new value. `by == 0` reads it without writing.
pub fn add_to_counter(
    tx: &mut zodiac_objects::Transaction<'_>,
    name: &str,
    by: i64,
) -> Result<i64, zodiac_objects::Error> {
    let key = format!("{COUNTER_ROOT_PREFIX}{name}");
    let counter: PRef<Counter> = match tx.root_entry(&key)? {
        Some(c) => c,
        None if by == 0 => return Ok(0),
        None => {
            let c = tx.add(Counter::new(0))?;
            tx.set_root_entry(&key, c)?;
            c
        }
    };
    if by == 0 {
        return Ok(tx.get(&counter)?.value());
    }
    tx.modify(&counter, |c| {
        c.add(by);
        c.value()
    })
}

/// Reads at most `SHELL_OUTPUT_BYTES_MAX` bytes, then drains the rest.
fn capped(mut pipe: impl Read) -> (String, bool) {
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = SHELL_OUTPUT_BYTES_MAX - kept.len();
                if n > room {
                    truncated = true;
                }
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    (String::from_utf8_lossy(&kept).into_owned(), truncated)
}

/// Runs `sh -c CMD`; returns its exit code and captured output.
fn shell(args: &str) -> Result<String, HandlerError> {
    let args = object(args, "shell")?;
    let Some(Value::String(cmd)) = args.get("cmd") else {
        return Err(user_error("shell: \"cmd\" must be a string"));
    };
    let timeout = match integer(&args, "timeout_ms", "shell")? {
        None => SHELL_TIMEOUT_DEFAULT,
        Some(ms) => Duration::from_millis(
            u64::try_from(ms).map_err(|_| user_error("shell: \"timeout_ms\" must be ≥ 0"))?,
        ),
    };
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| user_error(format!("shell: cannot start sh: {e}")))?;
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || capped(stdout));
    let err = std::thread::spawn(move || capped(stderr));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(user_error(format!(
                "shell: {cmd:?} did not finish within {} ms; killed",
                timeout.as_millis()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let (stdout, out_cut) = out.join().unwrap_or_default();
    let (stderr, err_cut) = err.join().unwrap_or_default();
    Ok(json!({
        "exit": status.code(),
        "stdout": stdout,
        "stderr": stderr,
        "truncated": out_cut || err_cut,
    })
    .to_string())
}

/// The built-in handlers; `shell` only when `allow_shell`.
pub fn handlers(allow_shell: bool) -> Handlers {
    let mut handlers = Handlers::new();
    handlers.register("echo", |_: &mut JobContext<'_, '_>, a: String| echo(&a));
    handlers.register("sleep", |_: &mut JobContext<'_, '_>, a: String| sleep(&a));
    handlers.register("fail", |_: &mut JobContext<'_, '_>, a: String| fail(&a));
    handlers.register("incr", |ctx: &mut JobContext<'_, '_>, a: String| {
        incr(ctx, &a)
    });
    if allow_shell {
        handlers.register("shell", |_: &mut JobContext<'_, '_>, a: String| shell(&a));
    }
    handlers
}

/// A job's argument bytes as built-in handlers store them.
pub fn encode_arguments(json_text: &str) -> Vec<u8> {
    postcard::to_stdvec(json_text).expect("a string always encodes")
}

/// The JSON a built-in job's bytes (arguments or value) hold, if they hold one.
pub fn decode_json(bytes: &[u8]) -> Option<Value> {
    let text: String = postcard::from_bytes(bytes).ok()?;
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_must_be_a_json_object() {
        assert!(echo("[1]").unwrap_err().to_string().contains("JSON object"));
        assert!(echo("{").unwrap_err().to_string().contains("not JSON"));
        assert_eq!(echo(r#"{"value": {"a": 1}}"#).unwrap(), r#"{"a":1}"#);
        assert_eq!(echo("{}").unwrap(), "null");
    }

    #[test]
    fn sleep_refuses_negative_and_huge_times() {
        assert!(sleep(r#"{"ms": -1}"#).is_err());
        assert!(sleep(r#"{"ms": "x"}"#).is_err());
        assert_eq!(sleep(r#"{"ms": 1}"#).unwrap(), "1");
    }

    #[test]
    fn fail_carries_the_message() {
        assert_eq!(
            fail(r#"{"message": "boom"}"#).unwrap_err().to_string(),
            "boom"
        );
    }

    #[test]
    fn shell_captures_output_and_exit_code_and_enforces_the_timeout() {
        let v: Value =
            serde_json::from_str(&shell(r#"{"cmd": "echo hi; echo err >&2; exit 3"}"#).unwrap())
                .unwrap();
        assert_eq!(v["exit"], 3);
        assert_eq!(v["stdout"], "hi\n");
        assert_eq!(v["stderr"], "err\n");
        let e = shell(r#"{"cmd": "sleep 5", "timeout_ms": 50}"#).unwrap_err();
        assert!(e.to_string().contains("did not finish"), "{e}");
    }

    #[test]
    fn shell_output_is_capped() {
        let v: Value = serde_json::from_str(
            &shell(r#"{"cmd": "head -c 200000 /dev/zero | tr '\\0' a"}"#).unwrap(),
        )
        .unwrap();
        assert_eq!(v["stdout"].as_str().unwrap().len(), SHELL_OUTPUT_BYTES_MAX);
        assert_eq!(v["truncated"], true);
    }

    #[test]
    fn json_round_trips_through_the_stored_bytes() {
        let bytes = encode_arguments(r#"{"value": 5}"#);
        assert_eq!(decode_json(&bytes), Some(json!({"value": 5})));
        assert_eq!(decode_json(&[0xff, 0xff]), None);
    }
}
