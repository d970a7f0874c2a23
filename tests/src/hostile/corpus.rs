//! Fixed hostile cases, each with the status and error code the API documents for it. Cases
//! whose input is valid go to the arena's signed subscription unsigned, so they too are
//! refused (`401 invalid_signature`) and nothing is stored.

use common::signing::hub_signature;
use serde_json::{Value, json};

use super::{Arena, Case, Expected, MAX_PAYLOAD, SECRET, encode};

/// A public address (example.com's); no test sends anything to it.
pub const PUBLIC: &str = "http://93.184.216.34/hooks";

/// SQL and script fragments, and other strings that break careless code.
pub const FRAGMENTS: &[&str] = &[
    "'; DROP TABLE deliveries; --",
    "\" OR \"1\"=\"1",
    "Robert'); DELETE FROM subscriptions;--",
    "1; SELECT pg_sleep(10)",
    "$$; TRUNCATE idempotency_keys; $$",
    "<script>alert(document.domain)</script>",
    "\"><img src=x onerror=alert(1)>",
    "{{constructor.constructor('return 1')()}}",
    "${jndi:ldap://127.0.0.1/x}",
    "%s%s%s%n",
    "\\u0000 \\x00 \\' \\\"",
    "\u{202e}gnp.exe",
    "\u{fffd}\u{feff}\u{1f4a9}",
];

fn nested(levels: usize) -> String {
    format!("{}{}", "[".repeat(levels), "]".repeat(levels))
}

/// A JSON object of exactly `size` bytes.
fn padded(size: usize) -> String {
    let pad = size - br#"{"pad":""}"#.len();
    format!(r#"{{"pad":"{}"}}"#, "x".repeat(pad))
}

/// Bodies that are not JSON, or not JSON the API takes, and valid ones at the edges.
pub fn bodies(arena: &Arena) -> Vec<Expected> {
    let objects = |levels: usize| format!("{}1{}", "{\"a\":".repeat(levels), "}".repeat(levels));
    let refused: Vec<(&str, Vec<u8>)> = vec![
        ("not json", b"not json".to_vec()),
        ("empty", Vec::new()),
        ("white space only", b" \r\n\t ".to_vec()),
        ("single quotes", b"{'a':1}".to_vec()),
        ("trailing comma", b"[1,]".to_vec()),
        ("trailing garbage", b"{\"a\":1}garbage".to_vec()),
        ("two documents", b"{} {}".to_vec()),
        ("byte order mark", b"\xef\xbb\xbf{}".to_vec()),
        ("NaN", b"NaN".to_vec()),
        ("leading zero", b"01".to_vec()),
        ("raw control character", b"{\"a\":\"\x01\"}".to_vec()),
        ("raw NUL", b"{\"a\":\"\x00\"}".to_vec()),
        ("bad escape", b"{\"a\":\"\\x41\"}".to_vec()),
        ("invalid UTF-8 in a string", b"{\"a\":\"\xff\"}".to_vec()),
        ("invalid UTF-8 outside strings", b"\xff{}".to_vec()),
        ("overlong UTF-8", b"{\"a\":\"\xc0\xaf\"}".to_vec()),
        ("UTF-8 surrogate", b"{\"a\":\"\xed\xa0\x80\"}".to_vec()),
        ("truncated UTF-8", b"{\"a\":\"\xe2\x82\"}".to_vec()),
        ("UTF-16", b"\xff\xfe{\x00}\x00".to_vec()),
        ("unterminated", b"{\"a\":[1,2".to_vec()),
        ("nested 129 deep", nested(129).into_bytes()),
        ("objects nested 129 deep", objects(129).into_bytes()),
        ("nested 8000 deep", nested(8000).into_bytes()),
    ];
    // Valid JSON, refused only for the missing signature: the parser let it through.
    let valid: Vec<(&str, Vec<u8>)> = vec![
        ("nested 128 deep", nested(128).into_bytes()),
        (
            "brackets inside strings",
            format!("\"{}\"", "[{".repeat(4000)).into_bytes(),
        ),
        ("exactly the limit", padded(MAX_PAYLOAD).into_bytes()),
        ("a huge exponent", b"1e999999".to_vec()),
        ("repeated keys", b"{\"a\":1,\"a\":2}".to_vec()),
        ("a bare string", b"\"x\"".to_vec()),
        (
            "SQL in the body",
            br#"{"q":"'; DROP TABLE deliveries; --"}"#.to_vec(),
        ),
    ];
    let too_large = [
        ("over the limit by one", padded(MAX_PAYLOAD + 1)),
        ("far over the limit", padded(4 * MAX_PAYLOAD)),
    ];

    let mut cases: Vec<Expected> = Vec::new();
    for (name, body) in refused {
        cases.push((arena.webhook(name, body), 400, "invalid_json"));
    }
    for (name, body) in valid {
        cases.push((arena.webhook(name, body), 401, "invalid_signature"));
    }
    for (name, body) in too_large {
        cases.push((arena.webhook(name, body), 413, "payload_too_large"));
    }
    cases
}

/// Content types that are not JSON, and spellings of JSON that are.
pub fn content_types(arena: &Arena) -> Vec<Expected> {
    let refused: &[(&str, &[u8])] = &[
        ("text/plain", b"text/plain"),
        ("form", b"application/x-www-form-urlencoded"),
        ("multipart", b"multipart/form-data; boundary=x"),
        ("json look-alike", b"application/jsonx"),
        ("x-json", b"application/x-json"),
        ("json-seq", b"application/json-seq"),
        ("a list", b"application/json, text/plain"),
        ("empty", b""),
        ("type only", b"application/"),
        ("anything", b"*/*"),
        ("not ASCII", b"application/json\xe9"),
    ];
    let json: &[(&str, &[u8])] = &[
        ("upper case", b"APPLICATION/JSON"),
        ("+json suffix", b"application/problem+json"),
        ("odd charset", b"application/json; charset=latin1"),
    ];
    let with = |name: &str, content_type: &[u8]| {
        Case::post(format!("content type {name}"), arena.ingest_path())
            .header("content-type", content_type)
            .body("{}")
    };

    let mut cases: Vec<Expected> = Vec::new();
    for (name, content_type) in refused {
        cases.push((with(name, content_type), 415, "unsupported_media_type"));
    }
    for (name, content_type) in json {
        cases.push((with(name, content_type), 401, "invalid_signature"));
    }
    cases.push((
        Case::post("no content type", arena.ingest_path()).body("{}"),
        415,
        "unsupported_media_type",
    ));
    cases.push((
        with("text first of two", b"text/plain").header("content-type", "application/json"),
        415,
        "unsupported_media_type",
    ));
    cases
}

/// Signatures, event types and idempotency keys that are malformed, too long, repeated, or
/// full of SQL and script.
pub fn headers(arena: &Arena) -> Vec<Expected> {
    let body = br#"{"a":1}"#;
    let good = hub_signature(SECRET, body);
    let other_body = hub_signature(SECRET, b"{}");
    let webhook = |name: String| arena.webhook(name, body);
    let mut cases: Vec<Expected> = Vec::new();

    let signatures: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("prefix only", b"sha256=".to_vec()),
        (
            "63 digits",
            format!("sha256={}", "a".repeat(63)).into_bytes(),
        ),
        (
            "65 digits",
            format!("sha256={}", "a".repeat(65)).into_bytes(),
        ),
        ("not hex", format!("sha256={}", "g".repeat(64)).into_bytes()),
        (
            "upper-case prefix",
            good.replace("sha256=", "SHA256=").into_bytes(),
        ),
        ("sha1", good.replace("sha256=", "sha1=").into_bytes()),
        ("space inside", good.replace('=', "= ").into_bytes()),
        ("for another body", other_body.clone().into_bytes()),
        (
            "10 KB",
            format!("sha256={}", "0".repeat(10_000)).into_bytes(),
        ),
        ("not ASCII", b"sha256=\xe9\xe9".to_vec()),
        ("SQL", b"sha256=' OR '1'='1".to_vec()),
    ];
    for (name, value) in signatures {
        let case = webhook(format!("signature {name}")).header("x-hub-signature-256", value);
        cases.push((case, 401, "invalid_signature"));
    }
    cases.push((
        webhook("two signatures, the wrong one first".to_owned())
            .header("x-hub-signature-256", &other_body)
            .header("x-hub-signature-256", &good),
        401,
        "invalid_signature",
    ));

    let event_types: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("a space", b"order created".to_vec()),
        ("129 characters", "e".repeat(129).into_bytes()),
        ("100 KB", "e".repeat(100_000).into_bytes()),
        ("SQL with spaces", b"' OR 1=1 --".to_vec()),
        (
            "script with spaces",
            b"<img src=x onerror=alert(1)>".to_vec(),
        ),
    ];
    for (name, value) in event_types {
        let case = webhook(format!("event type {name}")).header("x-event-type", value);
        cases.push((case, 400, "invalid_event_type"));
    }
    cases.push((
        webhook("two event types, the bad one first".to_owned())
            .header("x-event-type", "bad one")
            .header("x-event-type", "order.created"),
        400,
        "invalid_event_type",
    ));

    let keys: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("a space", b"order 1".to_vec()),
        ("256 characters", "k".repeat(256).into_bytes()),
        (
            "SQL with spaces",
            b"'; DROP TABLE idempotency_keys; --".to_vec(),
        ),
    ];
    for (name, value) in keys {
        let case = webhook(format!("idempotency key {name}")).header("idempotency-key", value);
        cases.push((case, 400, "invalid_idempotency_key"));
    }

    // White space around a header value is not part of it (RFC 9110), so these pass.
    for (header, value) in [
        ("x-event-type", " \torder.created \t"),
        ("idempotency-key", "\t order-1 \t"),
    ] {
        let case = webhook(format!("{header} padded with white space")).header(header, value);
        cases.push((case, 401, "invalid_signature"));
    }

    // Well-formed fragments pass validation and are refused only for the signature.
    for value in [
        "';DROP/**/TABLE/**/deliveries;--",
        "<script>alert(1)</script>",
        "${jndi:ldap://127.0.0.1/a}",
        "{{7*7}}",
        "../../etc/passwd",
    ] {
        for header in ["x-event-type", "idempotency-key"] {
            let case = webhook(format!("{header} {value}")).header(header, value);
            cases.push((case, 401, "invalid_signature"));
        }
    }
    cases
}

/// Query strings: event types the API must refuse, and parameters it must ignore.
pub fn queries(arena: &Arena) -> Vec<Expected> {
    let refused = [
        ("empty event type", "event_type=".to_owned()),
        ("event type with a space", "event_type=a%20b".to_owned()),
        ("event type with a NUL", "event_type=a%00b".to_owned()),
        ("event type with a newline", "event_type=a%0Ab".to_owned()),
        (
            "SQL event type",
            format!("event_type={}", encode("' OR 1=1 --")),
        ),
        (
            "long event type",
            format!("event_type={}", "e".repeat(5000)),
        ),
        (
            "two event types",
            "event_type=a%20b&event_type=ok".to_owned(),
        ),
    ];
    let ignored = [
        ("undecodable bytes", "event_type=%FF%FE".to_owned()),
        ("unknown parameters", "debug=1&admin=true".to_owned()),
    ];
    let with = |name: &str, query: &str| {
        Case::post(
            format!("query {name}"),
            format!("{}?{query}", arena.ingest_path()),
        )
        .json_body("{}")
    };

    let mut cases: Vec<Expected> = Vec::new();
    for (name, query) in refused {
        cases.push((with(name, &query), 400, "invalid_event_type"));
    }
    for (name, query) in ignored {
        cases.push((with(name, &query), 401, "invalid_signature"));
    }
    cases
}

/// Subscription ids that are not UUIDs, other spellings of one, and paths and methods
/// ingest does not serve.
pub fn ids_and_routes(arena: &Arena) -> Vec<Expected> {
    let unknown = uuid::Uuid::now_v7();
    let signed = &arena.signed;
    let ids: Vec<(&str, String, u16, &'static str)> = vec![
        ("not a UUID", "not-a-uuid".into(), 400, "invalid_id"),
        ("SQL", encode("1' OR '1'='1"), 400, "invalid_id"),
        (
            "script",
            encode("<script>alert(1)</script>"),
            400,
            "invalid_id",
        ),
        ("NUL", "%00".into(), 400, "invalid_id"),
        (
            "encoded slashes",
            "..%2F..%2Fetc%2Fpasswd".into(),
            400,
            "invalid_id",
        ),
        ("5000 characters", "a".repeat(5000), 400, "invalid_id"),
        ("UUID and more", format!("{unknown}x"), 400, "invalid_id"),
        (
            "UUID with a NUL",
            format!("{unknown}%00"),
            400,
            "invalid_id",
        ),
        ("31 hex digits", "0".repeat(31), 400, "invalid_id"),
        (
            "nil UUID",
            uuid::Uuid::nil().to_string(),
            404,
            "subscription_not_found",
        ),
        (
            "max UUID",
            uuid::Uuid::max().to_string(),
            404,
            "subscription_not_found",
        ),
        (
            "unknown UUID",
            unknown.to_string(),
            404,
            "subscription_not_found",
        ),
        // Other spellings of the signed subscription's id reach it and its signature check.
        (
            "upper case",
            signed.to_uppercase(),
            401,
            "invalid_signature",
        ),
        (
            "no hyphens",
            signed.replace('-', ""),
            401,
            "invalid_signature",
        ),
        (
            "braces",
            encode(&format!("{{{signed}}}")),
            401,
            "invalid_signature",
        ),
    ];
    let mut cases: Vec<Expected> = ids
        .into_iter()
        .map(|(name, id, status, code)| {
            let case = Case::post(format!("id {name}"), format!("/ingest/{id}")).json_body("{}");
            (case, status, code)
        })
        .collect();

    cases.push((
        Case::post("no id", "/ingest/").json_body("{}"),
        404,
        "not_found",
    ));
    cases.push((
        Case::post(
            "a path past the id",
            format!("{}/more", arena.ingest_path()),
        )
        .json_body("{}"),
        404,
        "not_found",
    ));
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::DELETE,
    ] {
        let case = arena
            .webhook(format!("method {method}"), "{}")
            .method(method);
        cases.push((case, 405, "method_not_allowed"));
    }

    let get = reqwest::Method::GET;
    let management: Vec<(&str, reqwest::Method, String, &'static str)> = vec![
        (
            "subscription id",
            get.clone(),
            "/subscriptions/1%27%20OR%201=1".into(),
            "invalid_id",
        ),
        (
            "delivery id",
            get.clone(),
            "/deliveries/%3Cscript%3E".into(),
            "invalid_id",
        ),
        (
            "patch id",
            reqwest::Method::PATCH,
            "/subscriptions/x".into(),
            "invalid_id",
        ),
        (
            "delete id",
            reqwest::Method::DELETE,
            "/subscriptions/x".into(),
            "invalid_id",
        ),
        (
            "cursor",
            get.clone(),
            format!(
                "/subscriptions?cursor={}",
                encode("'; DROP TABLE subscriptions; --")
            ),
            "invalid_cursor",
        ),
        (
            "negative limit",
            get.clone(),
            "/subscriptions?limit=-1".into(),
            "invalid_parameter",
        ),
        (
            "huge limit",
            get.clone(),
            "/subscriptions?limit=99999999999999999999999".into(),
            "invalid_parameter",
        ),
        (
            "status",
            get,
            format!("/subscriptions/{signed}/deliveries?status=%27"),
            "invalid_parameter",
        ),
    ];
    for (name, method, path, code) in management {
        let case = Case::post(format!("management {name}"), path).method(method);
        cases.push((case, 400, code));
    }
    cases
}

/// Target URLs with credentials, odd ports, other schemes or no host.
pub const MALFORMED_TARGETS: &[&str] = &[
    "http://user:pw@93.184.216.34/",
    "http://user@93.184.216.34/",
    "http://:pw@93.184.216.34/",
    "http://%75ser@93.184.216.34/",
    "http://127.0.0.1:80@93.184.216.34/",
    "https://93.184.216.34:443@127.0.0.1/",
    "http://93.184.216.34:65536/",
    "http://93.184.216.34:-1/",
    "http://93.184.216.34:99999999999/",
    "http://93.184.216.34:80a/",
    "http://93.184.216.34:8.0/",
    "http://[fe80::1%25eth0]/",
    "http://[::1/",
    "http://",
    "http://:80/",
    "//93.184.216.34/",
    "ftp://93.184.216.34/",
    "file:///etc/passwd",
    "javascript:alert(document.cookie)",
    "data:text/plain,hello",
    "gopher://127.0.0.1:6379/_FLUSHALL",
    "ws://93.184.216.34/",
];

/// Hosts that are not public whatever their spelling: IPv6 forms and names for this host.
pub const NON_PUBLIC_HOSTS: &[&str] = &[
    "[::1]",
    "[0:0:0:0:0:0:0:1]",
    "[::]",
    "[fe80::1]",
    "[fd00::1]",
    "[fc00::1]",
    "[ff02::1]",
    "[::ffff:0.0.0.0]",
    "localhost",
    "LOCALHOST",
    "localhost.",
    "api.localhost",
    "metadata.google.internal",
    // "localhost" and "127.0.0.1" in full-width letters and digits, which IDNA maps to ASCII.
    "\u{ff4c}\u{ff4f}\u{ff43}\u{ff41}\u{ff4c}\u{ff48}\u{ff4f}\u{ff53}\u{ff54}",
    "\u{ff11}\u{ff12}\u{ff17}.\u{ff10}.\u{ff10}.\u{ff11}",
];

/// Subscription bodies with a field that fails validation or is of the wrong type.
pub fn subscription_fields() -> Vec<(&'static str, Value, u16, &'static str)> {
    let valid = |extra: Value| {
        let mut body = json!({ "target_url": PUBLIC });
        if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
            body.extend(extra);
        }
        body
    };
    let event_types = |types: Value| valid(json!({ "event_types": types }));
    let sixty_five: Vec<String> = (0..65).map(|n| format!("e{n}")).collect();
    vec![
        (
            "empty secret",
            valid(json!({"secret": ""})),
            422,
            "invalid_secret",
        ),
        (
            "long secret",
            valid(json!({"secret": "s".repeat(257)})),
            422,
            "invalid_secret",
        ),
        (
            "long description",
            valid(json!({"description": "d".repeat(1025)})),
            422,
            "invalid_description",
        ),
        (
            "65 event types",
            event_types(json!(sixty_five)),
            422,
            "invalid_event_types",
        ),
        (
            "empty event type",
            event_types(json!([""])),
            422,
            "invalid_event_types",
        ),
        (
            "SQL event type",
            event_types(json!(["'; DROP TABLE subscriptions; --"])),
            422,
            "invalid_event_types",
        ),
        (
            "NUL in an event type",
            event_types(json!(["a\u{0}b"])),
            422,
            "invalid_event_types",
        ),
        (
            "long event type",
            event_types(json!(["e".repeat(129)])),
            422,
            "invalid_event_types",
        ),
        (
            "target null",
            json!({"target_url": null}),
            400,
            "invalid_body",
        ),
        (
            "target an object",
            json!({"target_url": {"$ne": ""}}),
            400,
            "invalid_body",
        ),
        ("no target", json!({"secret": "s"}), 400, "invalid_body"),
        (
            "enabled a string",
            valid(json!({"enabled": "yes"})),
            400,
            "invalid_body",
        ),
        (
            "event types a string",
            event_types(json!("a")),
            400,
            "invalid_body",
        ),
        ("body an array", json!([PUBLIC]), 400, "invalid_body"),
    ]
}

/// Subscription bodies that are not JSON the API can read.
pub fn subscription_bodies() -> Vec<Expected> {
    let refused: Vec<(&str, Vec<u8>)> = vec![
        ("not JSON", b"target_url=http://93.184.216.34/".to_vec()),
        ("empty", Vec::new()),
        (
            "invalid UTF-8",
            b"{\"target_url\":\"http://93.184.216.34/\xff\"}".to_vec(),
        ),
        (
            "nested 1000 deep",
            format!("{{\"target_url\":{}}}", nested(1000)).into_bytes(),
        ),
    ];
    let mut cases: Vec<Expected> = refused
        .into_iter()
        .map(|(name, body)| {
            let case = Case::post(format!("subscription {name}"), "/subscriptions").json_body(body);
            (case, 400, "invalid_body")
        })
        .collect();
    cases.push((
        Case::post("subscription as a form", "/subscriptions")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("target_url={PUBLIC}")),
        415,
        "unsupported_media_type",
    ));
    cases
}

/// Values of the worker's duration and schedule variables that it must refuse at start.
pub const BAD_DURATIONS: &[&str] = &[
    "0s",
    "-1s",
    "1",
    "1 s",
    "1e3s",
    "0x10s",
    "1s,",
    ",1s",
    "1s,,2s",
    "1s;2s",
    "none,1s",
    "\u{0663}s",
    "\u{ff11}s",
    "9999999999999999999999s",
    "18446744073709551616ns",
    "1.5.5s",
    "s",
    "10 seconds ago",
    "NaNs",
    "infs",
    "'; DROP TABLE x; --",
    "\u{202e}s1",
];
