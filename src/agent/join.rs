//! `-join` / `-retry-join`: joining the LAN pool through any agent already in it.
//!
//! Addresses are resolved at each attempt, not once at start (Consul's behaviour: a DNS name may
//! point at whichever agents are up now). An attempt succeeds when any address answers; attempts
//! repeat every `retry_interval` until one succeeds or `retry_max` attempts failed (0: forever).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use crate::config::JoinAddress;

/// How to find the pool.
#[derive(Debug, Clone)]
pub struct JoinPlan {
    pub addresses: Vec<JoinAddress>,
    pub retry_interval: Duration,
    /// Attempts before giving up; 0 means forever.
    pub retry_max: u32,
}

/// Why joining stopped without success.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinError {
    #[error("no join address answered after {attempts} attempts (retry_max); last error: {last}")]
    GaveUp { attempts: u32, last: String },
}

/// Resolve every address; the ones that do not resolve are logged and skipped.
pub async fn resolve(addresses: &[JoinAddress]) -> Vec<SocketAddr> {
    let mut resolved = Vec::new();
    for address in addresses {
        if let Ok(ip) = address.host.parse::<std::net::IpAddr>() {
            resolved.push(SocketAddr::new(ip, address.port));
            continue;
        }
        match tokio::net::lookup_host((address.host.as_str(), address.port)).await {
            Ok(addrs) => resolved.extend(addrs),
            Err(e) => tracing::warn!(%address, error = %e, "cannot resolve join address"),
        }
    }
    resolved
}

/// Attempt to join through `plan.addresses` with `join` (which contacts the resolved addresses and
/// says how many answered) until an attempt succeeds. Returns how many answered.
pub async fn retry_join<J, F, E>(plan: &JoinPlan, mut join: J) -> Result<usize, JoinError>
where
    J: FnMut(Vec<SocketAddr>) -> F,
    F: Future<Output = Result<usize, E>>,
    E: std::fmt::Display,
{
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let addrs = resolve(&plan.addresses).await;
        let last = if addrs.is_empty() {
            "no address resolved".to_string()
        } else {
            match join(addrs).await {
                Ok(answered) if answered > 0 => {
                    tracing::info!(answered, attempts, "joined the LAN pool");
                    return Ok(answered);
                }
                Ok(_) => "no address answered".to_string(),
                Err(e) => e.to_string(),
            }
        };
        if plan.retry_max > 0 && attempts >= plan.retry_max {
            return Err(JoinError::GaveUp { attempts, last });
        }
        tracing::warn!(attempts, error = %last, retry_in = ?plan.retry_interval, "join failed; retrying");
        tokio::time::sleep(plan.retry_interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(retry_max: u32) -> JoinPlan {
        JoinPlan {
            addresses: vec!["127.0.0.1:8301".parse().unwrap(), "127.0.0.2".parse().unwrap()],
            retry_interval: Duration::from_millis(1),
            retry_max,
        }
    }

    #[tokio::test]
    async fn retries_until_an_address_answers() {
        let mut calls = 0;
        let result = retry_join(&plan(0), |addrs| {
            calls += 1;
            assert_eq!(addrs, ["127.0.0.1:8301".parse().unwrap(), "127.0.0.2:8301".parse().unwrap()]);
            let answered = if calls < 3 { 0 } else { 1 };
            async move { Ok::<_, String>(answered) }
        })
        .await;
        assert_eq!(result, Ok(1));
        assert_eq!(calls, 3);
    }

    #[tokio::test]
    async fn gives_up_after_retry_max_with_the_last_error() {
        let result = retry_join(&plan(2), |_| async { Err::<usize, _>("connection refused") }).await;
        assert_eq!(result, Err(JoinError::GaveUp { attempts: 2, last: "connection refused".into() }));
    }
}
