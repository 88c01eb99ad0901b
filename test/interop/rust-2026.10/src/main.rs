//! metadata-interop-2026-10: the driver of ../rust (same subcommands, same JSON) around
//! `commonware-storage` 2026.10.0, module `metadata`, on the `commonware-runtime` 2026.10.0
//! tokio runtime. Differences from the 2026.4.0 driver follow the crate: `sync` consumes the
//! store and hands it back, contexts are labelled with `child`, and the runtime's blob layouts
//! can be restricted.
//!
//! Subcommands (JSON on stdout, errors on stderr with a non-zero exit code):
//!
//! * `replay --dir DIR --partition P --ops FILE.json [--layouts L]` applies a list of
//!   operations (the golden-vector `ops` format) to a store and prints the final entries and
//!   counters.
//! * `dump --dir DIR --partition P [--layouts L]` opens a store (running recovery) and prints
//!   its entries.
//! * `bench [--quick] [--dir DIR]` times sync and init (restart) on the reference's
//!   benchmark matrix and prints medians.
//!
//! `--layouts` is the runtime's blob layout range: `v0-v1` (the default: read both, create V1),
//! `v1`, or `v0` (read and create V0 only, as a node sharing files with 2026.4.0 would).

use commonware_runtime::{tokio as rt, BlobLayout, Metrics as _, Runner as _, Supervisor as _};
use commonware_storage::metadata::{Config, Metadata};
use commonware_utils::sequence::U64;
use serde_json::{json, Map, Value};
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

type Store = Metadata<rt::Context, U64, Vec<u8>>;

/// Partition used by the benchmark (any valid partition name works).
const BENCH_PARTITION: &str = "metadata-bench-partition";

/// Untimed iterations run before the timed ones of each sync configuration.
const SYNC_WARMUP: usize = 2;

/// Result type of the driver: errors are plain messages printed to stderr.
type Res<T> = Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("metadata-interop: {e}");
            ExitCode::from(1)
        }
    }
}

fn usage() -> String {
    "usage:\n  metadata-interop replay --dir DIR --partition P --ops FILE.json [--layouts v0|v1|v0-v1]\n  \
     metadata-interop dump --dir DIR --partition P [--layouts v0|v1|v0-v1]\n  \
     metadata-interop bench [--quick] [--dir DIR]"
        .to_string()
}

/// Minimal flag parser: `--name value` pairs plus boolean `--quick`.
struct Flags {
    dir: Option<String>,
    partition: Option<String>,
    ops: Option<String>,
    layouts: Option<String>,
    quick: bool,
}

fn parse_flags(args: &[String]) -> Res<Flags> {
    let mut flags = Flags {
        dir: None,
        partition: None,
        ops: None,
        layouts: None,
        quick: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut take = |name: &str| -> Res<String> {
            it.next()
                .cloned()
                .ok_or_else(|| format!("missing value for {name}"))
        };
        match a.as_str() {
            "--dir" => flags.dir = Some(take("--dir")?),
            "--partition" => flags.partition = Some(take("--partition")?),
            "--ops" => flags.ops = Some(take("--ops")?),
            "--layouts" => flags.layouts = Some(take("--layouts")?),
            "--quick" => flags.quick = true,
            other => return Err(format!("unknown argument {other:?}\n{}", usage())),
        }
    }
    Ok(flags)
}

fn run(args: &[String]) -> Res<String> {
    let Some(cmd) = args.first() else {
        return Err(usage());
    };
    let flags = parse_flags(&args[1..])?;
    match cmd.as_str() {
        "replay" => {
            let dir = flags.dir.ok_or("replay needs --dir")?;
            let partition = flags.partition.ok_or("replay needs --partition")?;
            let ops_path = flags.ops.ok_or("replay needs --ops")?;
            let text = std::fs::read_to_string(&ops_path)
                .map_err(|e| format!("cannot read {ops_path}: {e}"))?;
            let doc: Value = serde_json::from_str(&text)
                .map_err(|e| format!("invalid JSON in {ops_path}: {e}"))?;
            let ops = parse_ops(&doc)?;
            let layouts = parse_layouts(flags.layouts.as_deref())?;
            replay(PathBuf::from(dir), partition, ops, layouts)
        }
        "dump" => {
            let dir = flags.dir.ok_or("dump needs --dir")?;
            let partition = flags.partition.ok_or("dump needs --partition")?;
            let layouts = parse_layouts(flags.layouts.as_deref())?;
            replay(PathBuf::from(dir), partition, Vec::new(), layouts)
        }
        "bench" => bench(flags.quick, flags.dir.map(PathBuf::from)),
        "help" | "--help" | "-h" => Ok(json!({ "usage": usage() }).to_string()),
        other => Err(format!("unknown subcommand {other:?}\n{}", usage())),
    }
}

/// The runtime's blob layout range from `--layouts` (default: every layout, creating V1).
#[allow(deprecated)]
fn parse_layouts(text: Option<&str>) -> Res<std::ops::RangeInclusive<BlobLayout>> {
    match text.unwrap_or("v0-v1") {
        "v0-v1" => Ok(BlobLayout::V0..=BlobLayout::V1),
        "v1" => Ok(BlobLayout::V1..=BlobLayout::V1),
        "v0" => Ok(BlobLayout::V0..=BlobLayout::V0),
        other => Err(format!("--layouts: {other:?} is not v0, v1 or v0-v1")),
    }
}

/// A context label for instance `n` (labels must be `'static`; the driver is short-lived).
fn label(prefix: &str, n: usize) -> &'static str {
    Box::leak(format!("{prefix}{n}").into_boxed_str())
}

// ---------------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------------

enum Op {
    Put(u64, Vec<u8>),
    Remove(u64),
    Clear,
    Sync,
    GetMut(u64, Vec<u8>),
    RetainKeys(BTreeSet<u64>),
    Reopen,
}

fn parse_key(v: Option<&Value>, ctx: &str) -> Res<u64> {
    match v {
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| format!("{ctx}: key {n} is not a u64")),
        Some(Value::String(s)) => s
            .parse::<u64>()
            .map_err(|_| format!("{ctx}: key {s:?} is not a decimal u64")),
        _ => Err(format!("{ctx}: missing or invalid key")),
    }
}

fn parse_value(op: &Map<String, Value>, ctx: &str) -> Res<Vec<u8>> {
    if let Some(v) = op.get("value_hex") {
        let s = v
            .as_str()
            .ok_or_else(|| format!("{ctx}: value_hex must be a string"))?;
        return from_hex(s).ok_or_else(|| format!("{ctx}: value_hex is not valid hex"));
    }
    match op.get("value") {
        Some(Value::String(s)) => Ok(s.as_bytes().to_vec()),
        _ => Err(format!("{ctx}: needs value (UTF-8 string) or value_hex")),
    }
}

fn parse_ops(doc: &Value) -> Res<Vec<Op>> {
    let list = match doc {
        Value::Array(a) => a,
        Value::Object(o) => o
            .get("ops")
            .and_then(Value::as_array)
            .ok_or("JSON object has no `ops` array")?,
        _ => return Err("ops file must be an array or an object with an `ops` array".into()),
    };
    let mut ops = Vec::with_capacity(list.len());
    for (i, raw) in list.iter().enumerate() {
        let ctx = format!("op #{i}");
        let obj = raw
            .as_object()
            .ok_or_else(|| format!("{ctx}: not an object"))?;
        let kind = obj
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{ctx}: missing `op`"))?;
        let op = match kind {
            "put" => Op::Put(parse_key(obj.get("key"), &ctx)?, parse_value(obj, &ctx)?),
            "remove" => Op::Remove(parse_key(obj.get("key"), &ctx)?),
            "clear" => Op::Clear,
            "sync" => Op::Sync,
            "get_mut" => Op::GetMut(parse_key(obj.get("key"), &ctx)?, parse_value(obj, &ctx)?),
            "retain_keys" => {
                let keys = obj
                    .get("keys")
                    .and_then(Value::as_array)
                    .ok_or_else(|| format!("{ctx}: retain_keys needs a `keys` array"))?;
                let mut set = BTreeSet::new();
                for k in keys {
                    set.insert(parse_key(Some(k), &ctx)?);
                }
                Op::RetainKeys(set)
            }
            "reopen" => Op::Reopen,
            other => return Err(format!("{ctx}: unknown op {other:?}")),
        };
        ops.push(op);
    }
    Ok(ops)
}

// ---------------------------------------------------------------------------------------------
// Replay / dump
// ---------------------------------------------------------------------------------------------

fn store_config(partition: &str) -> Config<<Vec<u8> as commonware_codec::Read>::Cfg> {
    Config {
        partition: partition.to_string(),
        codec_config: ((0..).into(), ()),
    }
}

fn key_u64(k: &U64) -> u64 {
    let bytes: [u8; 8] = k.as_ref().try_into().expect("U64 is 8 bytes");
    u64::from_be_bytes(bytes)
}

/// Reads a counter or gauge from the runtime's Prometheus exposition.
fn metric(encoded: &str, name: &str) -> Option<u64> {
    encoded.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        if parts.next()? == name {
            parts.next()?.parse::<f64>().ok().map(|v| v as u64)
        } else {
            None
        }
    })
}

fn replay(
    dir: PathBuf,
    partition: String,
    ops: Vec<Op>,
    layouts: std::ops::RangeInclusive<BlobLayout>,
) -> Res<String> {
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let cfg = rt::Config::default()
        .with_storage_directory(dir)
        .with_storage_blob_layouts(layouts);
    let runner = rt::Runner::new(cfg);
    runner.start(|ctx| async move {
        // Each open instance registers its metrics under its own label so that the counters
        // reported are those of the last instance (they restart at 0 at every open).
        let mut instance = 0usize;
        let open = |n: usize| {
            let c = ctx.child(label("store", n));
            let cfg = store_config(&partition);
            async move {
                Store::init(c, cfg)
                    .await
                    .map_err(|e| format!("Metadata::init failed: {e}"))
            }
        };
        let mut store = open(instance).await?;
        let mut get_mut_missing = 0u64;
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    store.put(U64::new(k), v);
                }
                Op::Remove(k) => {
                    store.remove(&U64::new(k));
                }
                Op::Clear => store.clear(),
                Op::Sync => {
                    store = store
                        .sync()
                        .await
                        .map_err(|e| format!("sync failed: {e}"))?;
                }
                Op::GetMut(k, v) => match store.get_mut(&U64::new(k)) {
                    Some(slot) => *slot = v,
                    None => get_mut_missing += 1,
                },
                Op::RetainKeys(keep) => store.retain(|k, _| keep.contains(&key_u64(k))),
                Op::Reopen => {
                    drop(store);
                    instance += 1;
                    store = open(instance).await?;
                }
            }
        }

        let entries: Vec<Value> = store
            .keys()
            .map(|k| {
                let v = store.get(k).expect("listed key has a value");
                json!({ "key": key_u64(k).to_string(), "value_hex": to_hex(v) })
            })
            .collect();
        let encoded = ctx.encode();
        let label = format!("store{instance}");
        let mut counters = Map::new();
        for (out, name) in [
            ("sync_rewrites", format!("{label}_sync_rewrites_total")),
            ("sync_overwrites", format!("{label}_sync_overwrites_total")),
            ("keys", format!("{label}_keys")),
            (
                "storage_write_bytes",
                "runtime_storage_write_bytes_total".to_string(),
            ),
        ] {
            if let Some(v) = metric(&encoded, &name) {
                counters.insert(out.to_string(), json!(v));
            }
        }
        let mut out = Map::new();
        out.insert("entries".into(), Value::Array(entries));
        out.insert("counters".into(), Value::Object(counters));
        out.insert("instances_opened".into(), json!(instance + 1));
        if get_mut_missing > 0 {
            out.insert("get_mut_missing".into(), json!(get_mut_missing));
        }
        drop(store);
        Ok(Value::Object(out).to_string())
    })
}

// ---------------------------------------------------------------------------------------------
// Benchmark
// ---------------------------------------------------------------------------------------------

/// Small deterministic generator (splitmix64) for benchmark values and key choice.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn value(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// `count` keys 0..count, each with a 100-byte pseudo-random value.
fn initial_kvs(count: usize) -> Vec<(U64, Vec<u8>)> {
    let mut g = Gen(1);
    (0..count as u64)
        .map(|i| (U64::new(i), g.value(100)))
        .collect()
}

/// `modified` distinct existing keys (chosen by a partial shuffle) with new 100-byte values.
fn modified_kvs(kvs: &[(U64, Vec<u8>)], modified: usize) -> Vec<(U64, Vec<u8>)> {
    let mut g = Gen(2);
    let mut idx: Vec<usize> = (0..kvs.len()).collect();
    let take = modified.min(idx.len());
    for i in 0..take {
        let j = i + (g.next() % (idx.len() - i) as u64) as usize;
        idx.swap(i, j);
    }
    idx[..take]
        .iter()
        .map(|&i| (kvs[i].0.clone(), g.value(100)))
        .collect()
}

/// Iteration policy: stop once `budget` of wall time (setup included) is spent and at least
/// `min` timed iterations exist, or once `max` iterations ran.
struct Policy {
    budget: Duration,
    min: usize,
    max: usize,
}

fn stats(mut samples: Vec<Duration>) -> Value {
    samples.sort();
    let n = samples.len();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let median = if n % 2 == 1 {
        us(samples[n / 2])
    } else {
        (us(samples[n / 2 - 1]) + us(samples[n / 2])) / 2.0
    };
    let p90 = us(samples[((n * 9).div_ceil(10)).max(1) - 1]);
    let mean = samples.iter().map(|d| us(*d)).sum::<f64>() / n as f64;
    json!({
        "median_us": round1(median),
        "p90_us": round1(p90),
        "mean_us": round1(mean),
        "min_us": round1(us(samples[0])),
        "max_us": round1(us(samples[n - 1])),
        "iterations": n,
    })
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn unique_bench_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "metadata-interop-bench-{}-{nanos}",
        std::process::id()
    ))
}

fn bench(quick: bool, dir: Option<PathBuf>) -> Res<String> {
    let (own_dir, root) = match dir {
        Some(d) => (false, d),
        None => (true, unique_bench_dir()),
    };
    std::fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let result = bench_in(quick, &root);
    if own_dir {
        let _ = std::fs::remove_dir_all(&root);
    }
    result
}

fn bench_in(quick: bool, root: &Path) -> Res<String> {
    let sync_policy = if quick {
        Policy {
            budget: Duration::from_millis(700),
            min: 5,
            max: 40,
        }
    } else {
        Policy {
            budget: Duration::from_millis(4500),
            min: 10,
            max: 300,
        }
    };
    let init_policy = if quick {
        Policy {
            budget: Duration::from_millis(1200),
            min: 5,
            max: 40,
        }
    } else {
        Policy {
            budget: Duration::from_millis(5000),
            min: 10,
            max: 300,
        }
    };
    let key_counts_sync: [usize; 3] = [100, 1_000, 10_000];
    let modified_counts: [usize; 7] = [0, 1, 5, 25, 50, 75, 100];
    let key_counts_init: [usize; 4] = [100, 1_000, 10_000, 100_000];

    // Same runtime configuration as the reference benchmarks (tokio defaults), except for the
    // storage directory, which we choose.
    let cfg = rt::Config::default().with_storage_directory(root.to_path_buf());
    let storage_dir = root.display().to_string();
    let started = Instant::now();
    let runner = rt::Runner::new(cfg);
    runner.start(|ctx| async move {
        let mut sync_rows = Vec::new();
        let mut probe = 0usize;
        for &keys in &key_counts_sync {
            let kvs = initial_kvs(keys);
            for &modified in &modified_counts {
                let changes = modified_kvs(&kvs, modified);
                let t0 = Instant::now();
                let mut samples = Vec::new();
                let mut timed_kind = String::new();
                // Untimed warm-up iterations; the first one's store has its own metrics label so
                // we can confirm which kind of sync is being timed.
                let mut i = 0usize;
                loop {
                    let warmup = i < SYNC_WARMUP;
                    let c = if i == 0 {
                        probe += 1;
                        ctx.child(label("probe", probe))
                    } else {
                        ctx.child("bench")
                    };
                    let mut store = Store::init(c, store_config(BENCH_PARTITION))
                        .await
                        .map_err(|e| format!("init: {e}"))?;
                    for (k, v) in &kvs {
                        store.put(k.clone(), v.clone());
                    }
                    // Two syncs so that both blobs hold the data (the third is the timed one).
                    store = store.sync().await.map_err(|e| format!("sync: {e}"))?;
                    store = store.sync().await.map_err(|e| format!("sync: {e}"))?;
                    for (k, v) in &changes {
                        store.put(k.clone(), v.clone());
                    }
                    let start = Instant::now();
                    store = store.sync().await.map_err(|e| format!("sync: {e}"))?;
                    let elapsed = start.elapsed();
                    if i == 0 {
                        let enc = ctx.encode();
                        let ow = metric(&enc, &format!("probe{probe}_sync_overwrites_total"));
                        let rw = metric(&enc, &format!("probe{probe}_sync_rewrites_total"));
                        // With no modified key, 2026.10.0 writes nothing: counters stay (2, 0).
                        timed_kind = match (rw, ow) {
                            (Some(2), Some(1)) => "overwrite".into(),
                            (Some(3), Some(0)) => "rewrite".into(),
                            (Some(2), Some(0)) | (Some(2), None) => "skipped".into(),
                            other => format!("unexpected counters {other:?}"),
                        };
                    }
                    if !warmup {
                        samples.push(elapsed);
                    }
                    store.destroy().await.map_err(|e| format!("destroy: {e}"))?;
                    i += 1;
                    let n = samples.len();
                    if n >= sync_policy.max
                        || (n >= sync_policy.min && t0.elapsed() >= sync_policy.budget)
                    {
                        break;
                    }
                }
                let mut row = json!({ "keys": keys, "modified": modified });
                merge(&mut row, stats(samples));
                merge(&mut row, json!({ "timed_sync_kind": timed_kind }));
                sync_rows.push(row);
            }
        }

        let mut init_rows = Vec::new();
        for &keys in &key_counts_init {
            // Populate, with two syncs so that both blobs are full.
            {
                let mut store = Store::init(ctx.child("bench"), store_config(BENCH_PARTITION))
                    .await
                    .map_err(|e| format!("init: {e}"))?;
                for (k, v) in initial_kvs(keys) {
                    store.put(k, v);
                }
                store = store.sync().await.map_err(|e| format!("sync: {e}"))?;
                store.sync().await.map_err(|e| format!("sync: {e}"))?;
            }
            let t0 = Instant::now();
            let mut samples = Vec::new();
            let mut i = 0usize;
            loop {
                let start = Instant::now();
                let store = Store::init(ctx.child("bench"), store_config(BENCH_PARTITION))
                    .await
                    .map_err(|e| format!("init: {e}"))?;
                let elapsed = start.elapsed();
                if store.keys().count() != keys {
                    return Err(format!(
                        "restart of {keys} keys found {}",
                        store.keys().count()
                    ));
                }
                drop(store);
                if i > 0 {
                    samples.push(elapsed);
                }
                i += 1;
                let n = samples.len();
                if n >= init_policy.max
                    || (n >= init_policy.min && t0.elapsed() >= init_policy.budget)
                {
                    break;
                }
            }
            let mut row = json!({ "keys": keys });
            merge(&mut row, stats(samples));
            init_rows.push(row);
            let store = Store::init(ctx.child("bench"), store_config(BENCH_PARTITION))
                .await
                .map_err(|e| format!("init: {e}"))?;
            store.destroy().await.map_err(|e| format!("destroy: {e}"))?;
        }

        Ok(json!({
            "implementation": "rust commonware-storage 2026.10.0 (tokio runtime)",
            "quick": quick,
            "value_bytes": 100,
            "storage_dir": storage_dir,
            "sync": sync_rows,
            "init": init_rows,
            "total_s": round1(started.elapsed().as_secs_f64()),
        })
        .to_string())
    })
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, from) {
        a.extend(b);
    }
}

// ---------------------------------------------------------------------------------------------
// Hex helpers
// ---------------------------------------------------------------------------------------------

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0x0f) as usize] as char);
    }
    s
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    if s.len() % 2 != 0 {
        return None;
    }
    let nibble = |c: u8| -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some((nibble(p[0])? << 4) | nibble(p[1])?))
        .collect()
}
