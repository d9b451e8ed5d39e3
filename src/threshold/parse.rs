//! Threshold syntax: the metric path (`latency.p99`, `outcome."failed:400207".rate`), the
//! `{class:NAME}` tag, and the condition (`< 250ms`). Errors name the valid choices; locating
//! them in the scenario file is the validator's job.

use super::{Agg, Counter, Metric, Op, Timing};
use crate::dps::{OutcomeKey, Status};

const METRICS: &str = "latency.<agg>, service_time.<agg>, schedule_lag.<agg>, error_rate, \
                       unexpected_rate, throughput, requests, errors, unexpected, retries, \
                       not_sent, outcome.\"<status[:code]>\"[.rate]";
const AGGS: &str = "p50, p90, p95, p99, p999, p9999, p(99.95), p(12.5), min, max, mean";

/// Parses `metric[{class:NAME}]`; `classes` resolves class names.
pub(crate) fn metric(
    path: &str,
    classes: &[&str],
) -> Result<(Metric, Option<(usize, String)>), String> {
    let (path, class) = match path.strip_suffix('}').and_then(|p| p.rsplit_once('{')) {
        Some((p, tags)) => (p, Some(parse_tags(tags, classes)?)),
        None => (path, None),
    };
    let segs = split_path(path)?;
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let metric = match segs.as_slice() {
        [t @ ("latency" | "service_time" | "schedule_lag"), agg] => {
            let timing = match *t {
                "latency" => Timing::Latency,
                "service_time" => Timing::Service,
                _ => Timing::Lag,
            };
            Metric::Time(timing, parse_agg(agg)?)
        }
        [t @ ("latency" | "service_time" | "schedule_lag")] => {
            return Err(format!(
                "`{t}` needs an aggregation, e.g. `{t}.p99`; one of: {AGGS}"
            ))
        }
        ["error_rate"] => Metric::ErrorRate,
        ["unexpected_rate"] => Metric::UnexpectedRate,
        ["throughput"] => Metric::Throughput,
        ["requests"] => Metric::Count(Counter::Requests),
        ["errors"] => Metric::Count(Counter::Errors),
        ["unexpected"] => Metric::Count(Counter::Unexpected),
        ["retries"] => Metric::Count(Counter::Retries),
        ["not_sent"] => Metric::Count(Counter::NotSent),
        ["outcome", key] | ["outcome", key, "rate"] => Metric::Outcome {
            key: parse_outcome(key)?,
            rate: segs.len() == 3,
        },
        _ => return Err(format!("unknown metric `{path}`; metrics: {METRICS}")),
    };
    if class.is_some() && matches!(metric, Metric::Throughput | Metric::Count(Counter::NotSent)) {
        return Err(format!(
            "`{path}` is measured over the whole run only; remove the {{class:…}} tag"
        ));
    }
    Ok((metric, class))
}

fn parse_tags(tags: &str, classes: &[&str]) -> Result<(usize, String), String> {
    match tags.split_once(':') {
        Some(("class", name)) => {
            let name = name.trim();
            classes
                .iter()
                .position(|c| *c == name)
                .map(|i| (i, name.to_owned()))
                .ok_or_else(|| {
                    format!(
                        "unknown class `{name}` in {{class:{name}}}; classes: {}",
                        classes.join(", ")
                    )
                })
        }
        _ => Err(format!(
            "unknown tag `{{{tags}}}`; the only tag is {{class:NAME}}"
        )),
    }
}

/// Splits `a.b."c.d"` into `["a", "b", "c.d"]`.
fn split_path(path: &str) -> Result<Vec<String>, String> {
    let mut out = vec![String::new()];
    let (mut quoted, mut paren) = (false, false);
    for ch in path.chars() {
        match ch {
            '"' => quoted = !quoted,
            '(' | ')' if !quoted => {
                paren = ch == '(';
                out.last_mut().expect("never empty").push(ch);
            }
            '.' if !quoted && !paren => out.push(String::new()),
            _ => out.last_mut().expect("never empty").push(ch),
        }
    }
    if quoted {
        return Err(format!("unclosed quote in `{path}`"));
    }
    if out.iter().any(String::is_empty) {
        return Err(format!("empty segment in `{path}`"));
    }
    Ok(out)
}

fn parse_agg(s: &str) -> Result<Agg, String> {
    let bad = || format!("unknown aggregation `{s}`; one of: {AGGS}");
    Ok(match s {
        "min" => Agg::Min,
        "max" => Agg::Max,
        "mean" | "avg" => Agg::Mean,
        "med" => Agg::Quantile(0.5),
        _ => {
            // p50 = 50 %, p999 = 99.9 %, p9999 = 99.99 %; p(99.95) or p(12.5) for anything else.
            let digits = s.strip_prefix('p').ok_or_else(bad)?;
            let q = if let Some(inner) = digits.strip_prefix('(').and_then(|d| d.strip_suffix(')'))
            {
                inner.parse::<f64>().map_err(|_| bad())?
            } else if !digits.is_empty()
                && digits.chars().all(|c| c.is_ascii_digit())
                && (digits.len() <= 2 || digits.starts_with("99"))
            {
                let v: f64 = digits.parse().map_err(|_| bad())?;
                v / 10f64.powi(digits.len().saturating_sub(2) as i32)
            } else {
                return Err(bad());
            };
            if !(q > 0.0 && q <= 100.0) {
                return Err(format!("percentile `{s}` is not in (0, 100]"));
            }
            Agg::Quantile(q / 100.0)
        }
    })
}

fn parse_outcome(s: &str) -> Result<OutcomeKey, String> {
    let bad = || {
        format!("unknown outcome `{s}`; write `assigned`, `disabled`, `failed` or `failed:<6-digit code>`")
    };
    let (status, code) = match s.split_once(':') {
        Some((st, c)) => (st, Some(c.parse::<u32>().map_err(|_| bad())?)),
        None => (s, None),
    };
    let status = Status::parse(status).ok_or_else(bad)?;
    if code.is_some_and(|c| !(100_000..1_000_000).contains(&c)) {
        return Err(bad());
    }
    Ok(OutcomeKey { status, code })
}

/// Parses `< 250ms`, `>= 1000`, `== 0`. Timing limits need a unit.
pub(super) fn condition(metric: &Metric, s: &str) -> Result<(Op, f64), String> {
    let s = s.trim();
    let (op, rest) = [
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("<", Op::Lt),
        (">", Op::Gt),
    ]
    .iter()
    .find_map(|(p, op)| s.strip_prefix(p).map(|r| (*op, r.trim())))
    .ok_or_else(|| {
        format!("`{s}` does not start with an operator; write e.g. \"< 250ms\" (operators: < <= > >= == !=)")
    })?;
    let limit = match metric {
        Metric::Time(..) => humantime::parse_duration(rest)
            .map(|d| d.as_secs_f64() * 1e6)
            .map_err(|_| format!("`{rest}` is not a duration; write e.g. \"250ms\" or \"1s\""))?,
        _ => {
            let v: f64 = rest
                .parse()
                .map_err(|_| format!("`{rest}` is not a number"))?;
            if !v.is_finite() || v < 0.0 {
                return Err(format!("`{rest}` must be a finite number ≥ 0"));
            }
            if super::is_rate(metric) && v > 1.0 {
                return Err(format!(
                    "`{rest}` is not a fraction; rates are between 0 and 1 (0.001 = 0.1 %)"
                ));
            }
            v
        }
    };
    Ok((op, limit))
}
