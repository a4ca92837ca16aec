//! Results: counts, an hdrhistogram of end-to-end latency, and their human and JSON forms.

use std::time::{SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

pub fn unix_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_nanos()
}

/// Latency in microseconds, 1 µs to 60 s, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Delivered over sent; 0 when nothing was sent.
pub fn delivery_ratio(delivered: u64, sent: u64) -> f64 {
    if sent == 0 {
        0.0
    } else {
        delivered as f64 / sent as f64
    }
}

/// A histogram serialised by `Report::histogram`, from a process of ours.
pub fn histogram_from_base64(b64: &str) -> Histogram<u64> {
    use base64::Engine;
    use hdrhistogram::serialization::Deserializer;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).expect("base64 histogram");
    Deserializer::new().deserialize(&mut &bytes[..]).expect("histogram")
}

/// The field a child process puts its serialised histogram in.
pub const HISTOGRAM_FIELD: &str = "latency_histogram_v2_base64";

/// A scenario's result: named figures in order, printed as a table and written as JSON.
pub struct Report {
    pub scenario: &'static str,
    fields: Vec<(&'static str, Value)>,
}

impl Report {
    pub fn new(scenario: &'static str) -> Self {
        Report { scenario, fields: Vec::new() }
    }

    pub fn add(&mut self, name: &'static str, value: impl Into<Value>) -> &mut Self {
        self.fields.push((name, value.into()));
        self
    }

    /// mean, p50, p90, p99, p999 and max of `h`, in milliseconds.
    pub fn latency(&mut self, h: &Histogram<u64>) -> &mut Self {
        let ms = |us: u64| (us as f64 / 1000.0 * 1000.0).round() / 1000.0;
        self.add("latency_mean_ms", (h.mean() / 1000.0 * 1000.0).round() / 1000.0);
        for (name, q) in [("latency_p50_ms", 0.5), ("latency_p90_ms", 0.9), ("latency_p99_ms", 0.99), ("latency_p999_ms", 0.999)] {
            self.add(name, ms(h.value_at_quantile(q)));
        }
        self.add("latency_max_ms", ms(h.max()))
    }

    /// The whole histogram (V2 serialised, base64), for a parent process to merge.
    pub fn histogram(&mut self, h: &Histogram<u64>) -> &mut Self {
        use base64::Engine;
        let mut bytes = Vec::new();
        use hdrhistogram::serialization::Serializer;
        hdrhistogram::serialization::V2Serializer::new().serialize(h, &mut bytes).expect("serialising to memory");
        self.add(HISTOGRAM_FIELD, base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    /// Rebuilds a report from a child's JSON (field order kept).
    pub fn from_json(scenario: &'static str, map: Map<String, Value>) -> Report {
        let mut r = Report::new(scenario);
        for (k, v) in map {
            if k != "scenario" {
                r.fields.push((Box::leak(k.into_boxed_str()), v));
            }
        }
        r
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// A numeric field, 0 when absent.
    pub fn number(&self, name: &str) -> f64 {
        self.get(name).and_then(Value::as_f64).unwrap_or(0.0)
    }

    pub fn set(&mut self, name: &'static str, value: impl Into<Value>) {
        match self.fields.iter_mut().find(|(n, _)| *n == name) {
            Some(field) => field.1 = value.into(),
            None => self.fields.push((name, value.into())),
        }
    }

    pub fn remove(&mut self, name: &str) -> Option<Value> {
        let i = self.fields.iter().position(|(n, _)| *n == name)?;
        Some(self.fields.remove(i).1)
    }

    pub fn print(&self) {
        println!("{}", self.scenario);
        for (name, value) in &self.fields {
            println!("  {name:<28} {value}");
        }
    }

    pub fn json(&self) -> String {
        let mut map = Map::new();
        map.insert("scenario".into(), json!(self.scenario));
        for (name, value) in &self.fields {
            map.insert((*name).into(), value.clone());
        }
        serde_json::to_string_pretty(&Value::Object(map)).expect("JSON of plain values")
    }
}
