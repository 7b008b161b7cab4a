//! Prints packed chunk sizes for a few synthetic sample shapes (timestamps
//! with scrape jitter, counters, gauges), to see where block bytes go.

fn main() {
    let mut x: u64 = 0x1234_5678_9abc_def1;
    let mut rnd = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let n = 1920;
    let ts: Vec<i64> = (0..n)
        .map(|i| 1_700_000_000_000 + i * 1000 + rnd(5) as i64)
        .collect();
    let exact: Vec<i64> = (0..n).map(|i| 1_700_000_000_000 + i * 1000).collect();
    let show = |name: &str, s: Vec<(i64, f64)>| {
        let b = panoptes_tsdb::packed::encode(&s);
        println!("{name:40} {:.3} B/sample", b.len() as f64 / s.len() as f64);
    };
    show(
        "jittered ts, constant value",
        ts.iter().map(|&t| (t, 1.0)).collect(),
    );
    show(
        "exact ts, constant value",
        exact.iter().map(|&t| (t, 1.0)).collect(),
    );
    let mut c = 0.0;
    show(
        "exact ts, counter +0..20",
        exact
            .iter()
            .map(|&t| {
                c += rnd(21) as f64;
                (t, c)
            })
            .collect(),
    );
    let mut c = 0.0;
    show(
        "exact ts, counter +0..200000",
        exact
            .iter()
            .map(|&t| {
                c += rnd(200_001) as f64;
                (t, c)
            })
            .collect(),
    );
    let mut g = 100.0f64;
    show(
        "exact ts, gauge ±0.10 (2 decimals)",
        exact
            .iter()
            .map(|&t| {
                g = ((g + (rnd(21) as f64 - 10.0) / 100.0) * 100.0).round() / 100.0;
                (t, g)
            })
            .collect(),
    );
}
