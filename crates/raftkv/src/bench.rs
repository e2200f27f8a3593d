//! `raftkv bench`: a load generator speaking only the etcd v3 API, so the
//! same run can be pointed at raftkv or at etcd.
//!
//! `--clients` requests are kept in flight over `--conns` gRPC connections
//! (spread over the endpoints). Each request's latency goes into an
//! HdrHistogram (microseconds); errors are counted by gRPC code. With
//! `--rate`, requests are started on a fixed schedule and latency is
//! measured from the scheduled start, so a stalled server cannot hide its
//! queueing (no coordinated omission).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use proto::etcdserverpb as pb;
use tonic::transport::{Channel, Endpoint};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Put one key per request.
    Put,
    /// Range (get) one key per request.
    Range,
    /// A transaction with one put per request.
    TxnPut,
    /// Reads and writes mixed by --read-ratio.
    Mixed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KeyDistribution {
    Sequential,
    Uniform,
    Zipf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Consistency {
    /// Linearizable.
    L,
    /// Serializable.
    S,
}

#[derive(Args, Clone, Debug)]
pub struct BenchFlags {
    #[arg(value_enum)]
    workload: Workload,
    /// Client endpoints, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.1:2379")]
    endpoints: Vec<String>,
    /// Requests in flight.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// gRPC connections, spread over the endpoints.
    #[arg(long, default_value_t = 1)]
    conns: usize,
    /// Requests in all (default 10000 unless --duration is given).
    #[arg(long)]
    total: Option<u64>,
    /// Seconds to run, instead of --total.
    #[arg(long)]
    duration: Option<f64>,
    /// Requests per second in all (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    #[arg(long, default_value_t = 8)]
    key_size: usize,
    #[arg(long, default_value_t = 256)]
    val_size: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 100_000)]
    key_space: u64,
    #[arg(long, value_enum, default_value = "uniform")]
    key_dist: KeyDistribution,
    /// Zipf exponent for --key-dist zipf.
    #[arg(long, default_value_t = 0.99)]
    zipf_s: f64,
    /// Consistency of range requests.
    #[arg(long, value_enum, default_value = "l")]
    consistency: Consistency,
    /// Share of reads in the mixed workload.
    #[arg(long, default_value_t = 0.9)]
    read_ratio: f64,
    /// Seconds one request may take before it counts as an error.
    #[arg(long, default_value_t = 10.0)]
    request_timeout: f64,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
    /// Seed of the key choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Seedable randomness for picking keys (the Raft crate's SplitMix64).
struct Random(raft::rng::SplitMix64);

impl Random {
    fn new(seed: u64) -> Self {
        Random(raft::rng::SplitMix64::new(seed))
    }
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Picks key numbers in `0..key_space`.
enum KeyChooser {
    Sequential(Arc<AtomicU64>),
    Uniform,
    /// Cumulative probabilities of ranks 1..=key_space.
    Zipf(Arc<Vec<f64>>),
}

impl KeyChooser {
    fn new(distribution: KeyDistribution, key_space: u64, s: f64) -> Self {
        match distribution {
            KeyDistribution::Sequential => KeyChooser::Sequential(Arc::new(AtomicU64::new(0))),
            KeyDistribution::Uniform => KeyChooser::Uniform,
            KeyDistribution::Zipf => {
                let mut cumulative = Vec::with_capacity(key_space as usize);
                let mut sum = 0.0;
                for rank in 1..=key_space {
                    sum += 1.0 / (rank as f64).powf(s);
                    cumulative.push(sum);
                }
                for value in &mut cumulative {
                    *value /= sum;
                }
                KeyChooser::Zipf(Arc::new(cumulative))
            }
        }
    }

    fn share(&self) -> Self {
        match self {
            KeyChooser::Sequential(next) => KeyChooser::Sequential(next.clone()),
            KeyChooser::Uniform => KeyChooser::Uniform,
            KeyChooser::Zipf(cumulative) => KeyChooser::Zipf(cumulative.clone()),
        }
    }

    fn choose(&self, random: &mut Random, key_space: u64) -> u64 {
        match self {
            KeyChooser::Sequential(next) => next.fetch_add(1, Ordering::Relaxed) % key_space,
            KeyChooser::Uniform => random.next() % key_space,
            KeyChooser::Zipf(cumulative) => {
                let target = random.unit();
                cumulative.partition_point(|&value| value < target) as u64
            }
        }
    }
}

/// Key number `n` as exactly `size` bytes (zero-padded decimal, cut from
/// the left when longer), so keys sort like their numbers.
fn key_bytes(n: u64, size: usize) -> Bytes {
    let digits = format!("{n:0size$}");
    Bytes::from(digits[digits.len() - size..].to_string())
}

struct Totals {
    histogram: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    requests: u64,
}

impl Totals {
    fn new() -> anyhow::Result<Self> {
        Ok(Totals {
            histogram: Histogram::new_with_bounds(1, 60_000_000, 3)
                .context("creating a latency histogram")?,
            errors: BTreeMap::new(),
            requests: 0,
        })
    }
}

fn status_label(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), status.message())
}

async fn one_request(
    workload: Workload,
    channel: Channel,
    key: Bytes,
    value: &Bytes,
    serializable: bool,
    is_read: bool,
) -> Result<(), tonic::Status> {
    let mut kv = pb::kv_client::KvClient::new(channel);
    let put = || pb::PutRequest {
        key: key.clone(),
        value: value.clone(),
        ..pb::PutRequest::default()
    };
    match workload {
        Workload::Put => kv.put(put()).await.map(|_| ()),
        Workload::TxnPut => kv
            .txn(pb::TxnRequest {
                compare: Vec::new(),
                success: vec![pb::RequestOp {
                    request: Some(pb::request_op::Request::RequestPut(put())),
                }],
                failure: Vec::new(),
            })
            .await
            .map(|_| ()),
        Workload::Range | Workload::Mixed if is_read || workload == Workload::Range => kv
            .range(pb::RangeRequest {
                key: key.clone(),
                serializable,
                ..pb::RangeRequest::default()
            })
            .await
            .map(|_| ()),
        Workload::Range | Workload::Mixed => kv.put(put()).await.map(|_| ()),
    }
}

pub async fn run(flags: BenchFlags) -> anyhow::Result<()> {
    if flags.endpoints.is_empty() || flags.clients == 0 || flags.conns == 0 {
        anyhow::bail!("--endpoints, --clients and --conns must not be empty or zero");
    }
    if flags.key_space == 0 || flags.key_size == 0 {
        anyhow::bail!("--key-space and --key-size must be at least 1");
    }
    let total = match (flags.total, flags.duration) {
        (Some(_), Some(_)) => anyhow::bail!("give --total or --duration, not both"),
        (Some(total), None) => Some(total),
        (None, Some(_)) => None,
        (None, None) => Some(10_000),
    };
    let until = flags
        .duration
        .map(|seconds| Instant::now() + Duration::from_secs_f64(seconds));

    let mut channels = Vec::with_capacity(flags.conns);
    for position in 0..flags.conns {
        let endpoint = &flags.endpoints[position % flags.endpoints.len()];
        let url = if endpoint.contains("://") {
            endpoint.clone()
        } else {
            format!("http://{endpoint}")
        };
        let channel = Endpoint::from_shared(url.clone())
            .with_context(|| format!("invalid endpoint {endpoint}"))?
            .tcp_nodelay(true)
            .timeout(Duration::from_secs_f64(flags.request_timeout))
            .connect()
            .await
            .with_context(|| format!("connecting to {url}"))?;
        channels.push(channel);
    }

    let issued = Arc::new(AtomicU64::new(0));
    let completed = Arc::new(AtomicU64::new(0));
    let value = Bytes::from(vec![b'v'; flags.val_size]);
    let chooser = KeyChooser::new(flags.key_dist, flags.key_space, flags.zipf_s);
    let started = Instant::now();
    let interval = (flags.rate > 0).then(|| Duration::from_secs_f64(1.0 / flags.rate as f64));

    let progress = if std::io::stderr().is_terminal() && !flags.json {
        let completed = completed.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let done = completed.load(Ordering::Relaxed);
                let elapsed = started.elapsed().as_secs_f64().max(1e-9);
                let goal = total.map(|total| format!("/{total}")).unwrap_or_default();
                eprint!(
                    "\r{done}{goal} requests, {:.0} req/s   ",
                    done as f64 / elapsed
                );
                let _ = std::io::stderr().flush();
            }
        }))
    } else {
        None
    };

    let mut tasks = Vec::with_capacity(flags.clients);
    for client in 0..flags.clients {
        let channel = channels[client % channels.len()].clone();
        let issued = issued.clone();
        let completed = completed.clone();
        let value = value.clone();
        let chooser = chooser.share();
        let flags = flags.clone();
        tasks.push(tokio::spawn(async move {
            let mut totals = Totals::new()?;
            let mut random = Random::new(flags.seed ^ (client as u64).wrapping_mul(0x9E37_79B9));
            loop {
                let number = issued.fetch_add(1, Ordering::Relaxed);
                if total.is_some_and(|total| number >= total)
                    || until.is_some_and(|until| Instant::now() >= until)
                {
                    break;
                }
                // With a rate, request `number` is due at start + number/rate;
                // latency counts from then.
                let due = match interval {
                    Some(interval) => {
                        let due = started + interval.mul_f64(number as f64);
                        tokio::time::sleep_until(due.into()).await;
                        due
                    }
                    None => Instant::now(),
                };
                let key = key_bytes(chooser.choose(&mut random, flags.key_space), flags.key_size);
                let is_read = random.unit() < flags.read_ratio;
                let result = one_request(
                    flags.workload,
                    channel.clone(),
                    key,
                    &value,
                    flags.consistency == Consistency::S,
                    is_read,
                )
                .await;
                let micros = due.elapsed().as_micros().max(1) as u64;
                totals.requests += 1;
                match result {
                    Ok(()) => {
                        totals.histogram.saturating_record(micros);
                    }
                    Err(status) => *totals.errors.entry(status_label(&status)).or_insert(0) += 1,
                }
                completed.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(totals)
        }));
    }
    let mut totals = Totals::new()?;
    for task in tasks {
        let part = task.await.context("a bench client failed")??;
        totals
            .histogram
            .add(&part.histogram)
            .context("merging latency histograms")?;
        totals.requests += part.requests;
        for (label, count) in part.errors {
            *totals.errors.entry(label).or_insert(0) += count;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(progress) = progress {
        progress.abort();
        eprintln!();
    }
    report(&flags, &totals, elapsed);
    Ok(())
}

fn report(flags: &BenchFlags, totals: &Totals, elapsed: f64) {
    let succeeded = totals.histogram.len();
    let failed: u64 = totals.errors.values().sum();
    let throughput = succeeded as f64 / elapsed.max(1e-9);
    let millis = |quantile: f64| totals.histogram.value_at_quantile(quantile) as f64 / 1000.0;
    let max = totals.histogram.max() as f64 / 1000.0;
    let workload = format!("{:?}", flags.workload).to_lowercase();
    if flags.json {
        let errors: serde_json::Map<String, serde_json::Value> = totals
            .errors
            .iter()
            .map(|(label, count)| (label.clone(), serde_json::Value::from(*count)))
            .collect();
        let json = serde_json::json!({
            "workload": workload,
            "clients": flags.clients,
            "conns": flags.conns,
            "key_size": flags.key_size,
            "val_size": flags.val_size,
            "consistency": if flags.consistency == Consistency::S { "s" } else { "l" },
            "requests": totals.requests,
            "succeeded": succeeded,
            "failed": failed,
            "errors": errors,
            "seconds": elapsed,
            "throughput": throughput,
            "latency_ms": {
                "p50": millis(0.5),
                "p90": millis(0.9),
                "p99": millis(0.99),
                "p999": millis(0.999),
                "max": max,
            },
        });
        println!("{json}");
        return;
    }
    println!(
        "workload {workload}: {} requests from {} clients over {} connections in {elapsed:.2} s",
        totals.requests, flags.clients, flags.conns
    );
    println!("throughput: {throughput:.1} req/s");
    println!(
        "latency (ms): p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {max:.3}",
        millis(0.5),
        millis(0.9),
        millis(0.99),
        millis(0.999)
    );
    if failed == 0 {
        println!("errors: 0");
    } else {
        println!("errors: {failed}");
        for (label, count) in &totals.errors {
            println!("  {count} × {label}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_asked_size_and_sort_like_numbers() {
        assert_eq!(key_bytes(42, 8), Bytes::from_static(b"00000042"));
        assert_eq!(key_bytes(123_456_789, 4), Bytes::from_static(b"6789"));
        assert!(key_bytes(9, 8) < key_bytes(10, 8));
    }

    #[test]
    fn zipf_prefers_low_ranks_and_stays_in_range() {
        let chooser = KeyChooser::new(KeyDistribution::Zipf, 1000, 0.99);
        let mut random = Random::new(7);
        let picks: Vec<u64> = (0..10_000)
            .map(|_| chooser.choose(&mut random, 1000))
            .collect();
        assert!(picks.iter().all(|&key| key < 1000));
        let low = picks.iter().filter(|&&key| key < 10).count();
        assert!(low > 2_000, "the 10 hottest keys get a large share: {low}");
    }
}
