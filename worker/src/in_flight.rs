//! A cap on attempts in flight per subscription, so one slow target cannot take every
//! delivery slot of a worker and starve the healthy ones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use common::ids::SubscriptionId;

pub struct InFlight {
    limit: usize,
    counts: Mutex<HashMap<SubscriptionId, usize>>,
}

/// One attempt's place; dropping it frees the place.
pub struct Slot {
    owner: Arc<InFlight>,
    subscription_id: SubscriptionId,
}

impl InFlight {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            counts: Mutex::new(HashMap::new()),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A place for one more attempt to this subscription, unless it is at its cap.
    pub fn try_enter(self: &Arc<Self>, subscription_id: SubscriptionId) -> Option<Slot> {
        // The map is only ever updated whole under the lock, so a poisoned lock still
        // guards consistent data.
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(subscription_id).or_default();
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(Slot {
            owner: self.clone(),
            subscription_id,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self
            .owner
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.subscription_id) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.subscription_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_subscription_gets_at_most_its_cap() {
        let in_flight = InFlight::new(2);
        let (busy, other) = (SubscriptionId::new(), SubscriptionId::new());

        let first = in_flight.try_enter(busy);
        let second = in_flight.try_enter(busy);
        assert!(first.is_some() && second.is_some());
        assert!(
            in_flight.try_enter(busy).is_none(),
            "a third attempt exceeds the cap"
        );
        assert!(
            in_flight.try_enter(other).is_some(),
            "other subscriptions are unaffected"
        );

        drop(first);
        assert!(
            in_flight.try_enter(busy).is_some(),
            "a finished attempt frees its place"
        );
    }
}
