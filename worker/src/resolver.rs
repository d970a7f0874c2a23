//! A DNS resolver for outgoing deliveries that never returns non-public addresses.
//!
//! Checking a target's addresses when a subscription is written is not enough: its DNS can
//! change afterwards. Filtering at resolution time, on the connection's own lookup, leaves
//! no gap between check and use.

use std::net::SocketAddr;

use common::target;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

#[derive(Debug, thiserror::Error)]
#[error("target resolves to a non-public address")]
pub struct NonPublicTarget;

pub struct PublicOnlyResolver;

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let addresses = tokio::net::lookup_host((name.as_str(), 0)).await?;
            let public: Vec<SocketAddr> = addresses
                .filter(|address| target::is_public(address.ip()))
                .collect();
            if public.is_empty() {
                return Err(Box::new(NonPublicTarget) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}
