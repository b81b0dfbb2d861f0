//! Destination health and the circuit breaker, kept in DynamoDB (`TENANT#<t>` /
//! `HEALTH#<dest>`) so every worker sees the same state and it survives restarts.
//!
//! - Each failed attempt that counts (408, 429, 5xx, timeouts, network errors) adds to
//!   `consecutive_failures` and keeps `first_failure_ms`; a success resets them and stamps
//!   `last_success_ms` (at most once a minute per worker while healthy, to save writes).
//! - At `threshold` consecutive failures the breaker opens (`state = open`) until `open_until_ms`:
//!   the destination is paused and a `DestinationPaused` event goes out. Deliveries to it wait
//!   in the queue without spending attempts.
//! - When the pause ends, exactly one worker wins a conditional write and sends one probe
//!   (`state = probing`). A probe that succeeds closes the breaker (`DestinationRecovered`) and
//!   the queued deliveries drain; one that fails re-opens it with the cooldown doubled.

use std::collections::HashMap;
use std::time::Duration;

use crate::attrs::health as hl;
use crate::keys;
use crate::{DestinationId, TenantId};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    Probing,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::Probing => "probing",
        }
    }
}

/// The health read model: what operators and the API show about a destination.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HealthView {
    pub tenant: TenantId,
    pub destination: DestinationId,
    pub state: BreakerState,
    pub consecutive_failures: u32,
    pub first_failure_at: Option<String>,
    pub last_success_at: Option<String>,
    pub paused_until: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub state: BreakerState,
    pub consecutive_failures: u32,
    pub first_failure_ms: Option<u64>,
    pub last_success_ms: Option<u64>,
    pub open_until_ms: u64,
    pub probe_until_ms: u64,
    pub paused_at_ms: Option<u64>,
    pub trips: u32,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            state: BreakerState::Closed,
            consecutive_failures: 0,
            first_failure_ms: None,
            last_success_ms: None,
            open_until_ms: 0,
            probe_until_ms: 0,
            paused_at_ms: None,
            trips: 0,
        }
    }
}

impl Health {
    pub fn view(&self, tenant: &TenantId, destination: &DestinationId) -> HealthView {
        use crate::clock::rfc3339_ms;
        HealthView {
            tenant: tenant.clone(),
            destination: *destination,
            state: self.state,
            consecutive_failures: self.consecutive_failures,
            first_failure_at: self.first_failure_ms.map(rfc3339_ms),
            last_success_at: self.last_success_ms.map(rfc3339_ms),
            paused_until: (self.state != BreakerState::Closed)
                .then(|| rfc3339_ms(self.open_until_ms.max(self.probe_until_ms))),
        }
    }

    fn from_item(item: &HashMap<String, AttributeValue>) -> Health {
        let num = |k: &str| item.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<u64>().ok());
        let state = match item.get(hl::STATE).and_then(|v| v.as_s().ok()).map(String::as_str) {
            Some(s) if s == BreakerState::Open.as_str() => BreakerState::Open,
            Some(s) if s == BreakerState::Probing.as_str() => BreakerState::Probing,
            _ => BreakerState::Closed,
        };
        Health {
            state,
            consecutive_failures: num(hl::CONSECUTIVE_FAILURES).unwrap_or(0) as u32,
            first_failure_ms: num(hl::FIRST_FAILURE_MS),
            last_success_ms: num(hl::LAST_SUCCESS_MS),
            open_until_ms: num(hl::OPEN_UNTIL_MS).unwrap_or(0),
            probe_until_ms: num(hl::PROBE_UNTIL_MS).unwrap_or(0),
            paused_at_ms: num(hl::PAUSED_AT_MS),
            trips: num(hl::TRIPS).unwrap_or(0) as u32,
        }
    }
}

/// What the breaker says about sending now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Send,
    /// This worker holds the probe: send, and the outcome decides the breaker.
    Probe,
    /// Paused: try again after this long.
    Wait(Duration),
}

/// A breaker transition worth an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Paused { consecutive_failures: u32, first_failure_ms: u64, paused_until_ms: u64 },
    Recovered { failures_before: u32, paused_at_ms: Option<u64> },
}

/// A healthy destination's last-success stamp is rewritten at most this often.
pub const STAMP_FRESH_MS: u64 = 60_000;

#[derive(Debug, Clone)]
pub struct HealthStore {
    pub client: aws_sdk_dynamodb::Client,
    pub table: String,
}

type DynErr = aws_sdk_dynamodb::Error;

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn conditional<T>(r: Result<T, DynErr>) -> Result<Option<T>, DynErr> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(DynErr::ConditionalCheckFailedException(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

impl HealthStore {
    fn update(
        &self,
        tenant: &TenantId,
        dest: &DestinationId,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        let k = keys::destination_health(tenant, dest);
        self.client
            .update_item()
            .table_name(&self.table)
            .key(keys::PK, AttributeValue::S(k.pk))
            .key(keys::SK, AttributeValue::S(k.sk))
            .expression_attribute_names("#st", hl::STATE)
    }

    pub async fn get(&self, tenant: &TenantId, dest: &DestinationId) -> Result<Health, DynErr> {
        let k = keys::destination_health(tenant, dest);
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(keys::PK, AttributeValue::S(k.pk))
            .key(keys::SK, AttributeValue::S(k.sk))
            // Eventually consistent: the breaker's transitions are conditional writes, so a read
            // a moment old only means one more send or one more wait.
            .consistent_read(false)
            .send()
            .await
            .map_err(DynErr::from)?;
        Ok(out.item.as_ref().map(Health::from_item).unwrap_or_default())
    }

    /// Whether to send now, claiming the probe when a pause has run out.
    pub async fn gate(
        &self,
        tenant: &TenantId,
        dest: &DestinationId,
        h: &Health,
        now_ms: u64,
        probe_for: Duration,
    ) -> Result<Gate, DynErr> {
        let (expired, from, until_attr) = match h.state {
            BreakerState::Closed => return Ok(Gate::Send),
            BreakerState::Open => (h.open_until_ms <= now_ms, BreakerState::Open, hl::OPEN_UNTIL_MS),
            BreakerState::Probing => (h.probe_until_ms <= now_ms, BreakerState::Probing, hl::PROBE_UNTIL_MS),
        };
        if !expired {
            let until = if h.state == BreakerState::Open { h.open_until_ms } else { h.probe_until_ms };
            return Ok(Gate::Wait(Duration::from_millis(until.saturating_sub(now_ms).max(1000))));
        }
        let claimed = self
            .update(tenant, dest)
            .update_expression(format!("SET #st = :probing, {} = :pu", hl::PROBE_UNTIL_MS))
            .condition_expression(format!("#st = :from AND {until_attr} <= :now"))
            .expression_attribute_values(":from", AttributeValue::S(from.as_str().into()))
            .expression_attribute_values(":probing", AttributeValue::S(BreakerState::Probing.as_str().into()))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":pu", n(now_ms + probe_for.as_millis() as u64))
            .send()
            .await
            .map_err(DynErr::from);
        Ok(match conditional(claimed)? {
            Some(_) => Gate::Probe,
            None => Gate::Wait(Duration::from_secs(2)),
        })
    }

    /// Records a counted failure; opens the breaker at `threshold` (or re-opens it after a
    /// failed probe). Returns the health after, and `Paused` when this call paused it.
    pub async fn failure(
        &self,
        tenant: &TenantId,
        dest: &DestinationId,
        now_ms: u64,
        threshold: u32,
        cooldown: impl Fn(u32) -> Duration,
        was_probe: bool,
    ) -> Result<(Health, Option<Transition>), DynErr> {
        let out = self
            .update(tenant, dest)
            .update_expression(format!(
                "SET {cf} = if_not_exists({cf}, :zero) + :one, {ff} = if_not_exists({ff}, :now), {lf} = :now, \
                 #st = if_not_exists(#st, :closed)",
                cf = hl::CONSECUTIVE_FAILURES,
                ff = hl::FIRST_FAILURE_MS,
                lf = hl::LAST_FAILURE_MS,
            ))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":closed", AttributeValue::S(BreakerState::Closed.as_str().into()))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(DynErr::from)?;
        let h = out.attributes.as_ref().map(Health::from_item).unwrap_or_default();
        let should_open = match h.state {
            BreakerState::Closed => h.consecutive_failures >= threshold,
            BreakerState::Probing => was_probe,
            BreakerState::Open => false,
        };
        if !should_open {
            return Ok((h, None));
        }
        let from = if h.state == BreakerState::Closed { BreakerState::Closed } else { BreakerState::Probing };
        let until = now_ms + cooldown(h.trips).as_millis() as u64;
        let opened = self
            .update(tenant, dest)
            .update_expression(format!(
                "SET #st = :open, {ou} = :until, {pa} = if_not_exists({pa}, :now), {tr} = if_not_exists({tr}, :zero) + :one",
                ou = hl::OPEN_UNTIL_MS,
                pa = hl::PAUSED_AT_MS,
                tr = hl::TRIPS,
            ))
            .condition_expression("#st = :from")
            .expression_attribute_values(":open", AttributeValue::S(BreakerState::Open.as_str().into()))
            .expression_attribute_values(":from", AttributeValue::S(from.as_str().into()))
            .expression_attribute_values(":until", n(until))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(DynErr::from);
        match conditional(opened)? {
            Some(out) => {
                let after = out.attributes.as_ref().map(Health::from_item).unwrap_or_default();
                // Only the closed -> open edge is news; a failed probe just extends the pause.
                let t = (from == BreakerState::Closed).then(|| Transition::Paused {
                    consecutive_failures: after.consecutive_failures,
                    first_failure_ms: after.first_failure_ms.unwrap_or(now_ms),
                    paused_until_ms: until,
                });
                Ok((after, t))
            }
            None => Ok((h, None)),
        }
    }

    /// Records a success: closes the breaker. Skips the write when `known` shows a healthy,
    /// recently stamped destination.
    pub async fn success(
        &self,
        tenant: &TenantId,
        dest: &DestinationId,
        now_ms: u64,
        known: &Health,
    ) -> Result<(Health, Option<Transition>), DynErr> {
        let fresh = known.last_success_ms.is_some_and(|t| now_ms.saturating_sub(t) < STAMP_FRESH_MS);
        if known.state == BreakerState::Closed && known.consecutive_failures == 0 && fresh {
            return Ok((known.clone(), None));
        }
        let out = self
            .update(tenant, dest)
            .update_expression(format!(
                "SET {cf} = :zero, {ls} = :now, #st = :closed, {tr} = :zero REMOVE {ff}, {ou}, {pu}, {pa}",
                cf = hl::CONSECUTIVE_FAILURES,
                ls = hl::LAST_SUCCESS_MS,
                tr = hl::TRIPS,
                ff = hl::FIRST_FAILURE_MS,
                ou = hl::OPEN_UNTIL_MS,
                pu = hl::PROBE_UNTIL_MS,
                pa = hl::PAUSED_AT_MS,
            ))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":closed", AttributeValue::S(BreakerState::Closed.as_str().into()))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(DynErr::from)?;
        let before = out.attributes.as_ref().map(Health::from_item).unwrap_or_default();
        let t = (before.state != BreakerState::Closed).then_some(Transition::Recovered {
            failures_before: before.consecutive_failures,
            paused_at_ms: before.paused_at_ms,
        });
        let after = Health { last_success_ms: Some(now_ms), ..Health::default() };
        Ok((after, t))
    }
}
