//! Generators of hostile input for property tests, and the address notations they use.

use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::Value;

use super::encode;

/// Any bytes HTTP/1.1 allows in a header value, and near misses of `sha256=<hex>`.
pub fn signature_header() -> impl Strategy<Value = Vec<u8>> {
    let header_byte = prop_oneof![0x20u8..0x7f, 0x80u8..=0xff, Just(b'\t')];
    let near_miss = ("[0-9a-fA-F]{0,80}", "(sha256=|sha256|SHA256=|sha1=|)")
        .prop_map(|(digits, prefix)| format!("{prefix}{digits}").into_bytes());
    prop_oneof![vec(header_byte, 0..200), near_miss]
}

/// Any text, and text made mostly of separators, white space and control characters.
pub fn event_type_text() -> impl Strategy<Value = String> {
    prop_oneof!["(?s).{0,160}", "[a-z.:_\\- \\t\\x00-\\x1f\\x7f]{0,140}"]
}

/// Random bytes, near-JSON text, and real JSON documents up to 8 levels deep.
pub fn body() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |number| number.is_finite())
            .prop_map(Value::from),
        "(?s).{0,24}".prop_map(Value::from),
    ];
    let document = leaf.prop_recursive(8, 128, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map("(?s).{0,8}", inner, 0..8)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    });
    prop_oneof![
        vec(any::<u8>(), 0..600),
        "[\\[\\]{}\":,0-9a-z\\\\. eE+\\-]{0,300}".prop_map(String::into_bytes),
        document.prop_map(|value| serde_json::to_vec(&value).expect("serialise")),
    ]
}

/// Path segments: any text without a slash, and near-UUIDs in spellings the UUID parser
/// may or may not take (hyphens anywhere, braces, a URN prefix, a stray letter).
pub fn path_id() -> impl Strategy<Value = String> {
    let near_uuid = (
        "[0-9a-fA-F]{30,34}",
        vec(0usize..34, 0..5),
        prop_oneof![Just(""), Just("{"), Just("urn:uuid:"), Just("x")],
    )
        .prop_map(|(digits, hyphens, prefix)| {
            let mut id = digits;
            for position in hyphens {
                id.insert(position.min(id.len()), '-');
            }
            match prefix {
                "{" => format!("{{{id}}}"),
                other => format!("{other}{id}"),
            }
        });
    // A segment of dots only is a "go up" segment, which clients resolve before sending.
    prop_oneof!["(?s)[^/]{1,40}", near_uuid]
        .prop_filter("not a dot segment", |id| !id.chars().all(|c| c == '.'))
}

/// Loopback, private, link-local (cloud metadata), CGNAT and "this network" addresses.
pub fn non_public_ipv4() -> impl Strategy<Value = u32> {
    prop_oneof![
        any::<u32>().prop_map(|x| (127 << 24) | (x & 0x00ff_ffff)),
        any::<u32>().prop_map(|x| (10 << 24) | (x & 0x00ff_ffff)),
        any::<u16>().prop_map(|x| 0xa9fe_0000 | u32::from(x)),
        Just(0xa9fe_a9fe),
        any::<u16>().prop_map(|x| 0xc0a8_0000 | u32::from(x)),
        any::<u32>().prop_map(|x| 0xac10_0000 | (x & 0x000f_ffff)),
        any::<u32>().prop_map(|x| 0x6440_0000 | (x & 0x003f_ffff)),
        any::<u32>().prop_map(|x| x & 0x00ff_ffff),
    ]
}

/// How many notations [`ipv4_notation`] knows.
pub const NOTATIONS: u8 = 17;

/// An IPv4 address in one of the notations URL parsers take for it: decimal, hex and octal,
/// whole or in parts, shortened, with a trailing dot, percent-encoded, and inside IPv6
/// (mapped, compatible, NAT64, 6to4).
pub fn ipv4_notation(ip: u32, notation: u8) -> String {
    let [a, b, c, d] = ip.to_be_bytes();
    match notation % NOTATIONS {
        0 => format!("{a}.{b}.{c}.{d}"),
        1 => format!("{ip}"),
        2 => format!("0x{ip:08x}"),
        3 => format!("0{ip:o}"),
        4 => format!("0x{a:x}.0x{b:x}.0x{c:x}.0x{d:x}"),
        5 => format!("0{a:o}.0{b:o}.0{c:o}.0{d:o}"),
        6 => format!("{a}.{b}.{}", (u32::from(c) << 8) | u32::from(d)),
        7 => format!("{a}.{}", ip & 0x00ff_ffff),
        8 => format!("{a}.{b}.{c}.{d}."),
        9 => format!("0x{a:X}.0{b:o}.{c}.0x{d:02x}"),
        10 => format!("[::ffff:{a}.{b}.{c}.{d}]"),
        11 => format!("[::ffff:{:x}:{:x}]", ip >> 16, ip & 0xffff),
        12 => format!("[64:ff9b::{a}.{b}.{c}.{d}]"),
        13 => format!("[2002:{:x}:{:x}::1]", ip >> 16, ip & 0xffff),
        14 => format!("[::{a}.{b}.{c}.{d}]"),
        15 => encode(&format!("{a}.{b}.{c}.{d}")).replace('.', "%2E"),
        _ => format!("[0:0:0:0:0:ffff:{a}.{b}.{c}.{d}]"),
    }
}

/// URLs into non-public networks: any notation of the host, either scheme, any port, and
/// sometimes credentials.
pub fn private_target_url() -> impl Strategy<Value = String> {
    (
        non_public_ipv4(),
        0..NOTATIONS,
        prop_oneof![Just("http"), Just("https"), Just("HTTP")],
        proptest::option::of(any::<u16>()),
        proptest::option::of("[a-zA-Z0-9%:]{1,12}"),
        "[a-zA-Z0-9/._~%-]{0,24}",
    )
        .prop_map(|(ip, notation, scheme, port, userinfo, path)| {
            let host = ipv4_notation(ip, notation);
            let port = port.map(|port| format!(":{port}")).unwrap_or_default();
            let userinfo = userinfo.map(|info| format!("{info}@")).unwrap_or_default();
            format!("{scheme}://{userinfo}{host}{port}/{path}")
        })
}

/// Names this machine resolves to loopback through /etc/hosts, which only the API's DNS
/// check can catch.
pub fn loopback_names_in_hosts_file() -> Vec<String> {
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    hosts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let address = fields.next()?;
            let loopback = address
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
            loopback.then(|| fields.map(str::to_owned).collect::<Vec<_>>())
        })
        .flatten()
        .filter(|name| !name.starts_with('#') && name.contains(|c: char| c.is_alphabetic()))
        .take(5)
        .collect()
}

/// Values for a duration or schedule variable: any short text, numbers with any unit, and
/// comma-separated lists of near misses.
pub fn duration_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "(?s).{0,30}",
        "[0-9]{1,25}(ns|us|ms|s|m|h|d|w|y|years|months|)",
        "([0-9 ]{0,4}[a-z]{0,3},?){0,6}",
    ]
}
