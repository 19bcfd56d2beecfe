//! Tenants: quotas in effect, changes to them, and fair share of a fleet's slots.

use crate::store::StoreError;
use tessera_api::limits;

/// The quotas in effect: what an operator set (`set`), over the defaults. For the optional
/// quotas, 0 means none.
pub fn quotas(set: &tessera_api::TenantUpdate) -> tessera_api::Quotas {
    let d = tessera_api::Quotas::default();
    tessera_api::Quotas {
        queued_tasks: set.queued_tasks.unwrap_or(d.queued_tasks),
        running: set.running.filter(|&n| n > 0).or(d.running),
        memory_mib: set.memory_mib.filter(|&n| n > 0).or(d.memory_mib),
        deadline_seconds: set
            .deadline_seconds
            .filter(|&n| n > 0)
            .or(d.deadline_seconds),
        log_bytes_per_job: set.log_bytes_per_job.unwrap_or(d.log_bytes_per_job),
        component_bytes: set.component_bytes.unwrap_or(d.component_bytes),
        requests_per_second: set.requests_per_second.unwrap_or(d.requests_per_second),
    }
}

/// What an operator's update makes of a tenant's weight and the quotas set on it, checked.
pub fn update_tenant(
    weight: u32,
    set: &tessera_api::TenantUpdate,
    update: &tessera_api::TenantUpdate,
) -> Result<(u32, tessera_api::TenantUpdate), StoreError> {
    let weight = update.weight.unwrap_or(weight);
    if !(1..=1000).contains(&weight) {
        return Err(StoreError::Invalid(format!(
            "weight {weight} is out of range: use 1 to 1000"
        )));
    }
    let positive = [
        ("queued_tasks", update.queued_tasks),
        ("log_bytes_per_job", update.log_bytes_per_job),
        ("component_bytes", update.component_bytes),
        (
            "requests_per_second",
            update.requests_per_second.map(u64::from),
        ),
    ];
    for (name, value) in positive {
        if value == Some(0) {
            return Err(StoreError::Invalid(format!(
                "{name} must be at least 1 (it has no 'none')"
            )));
        }
    }
    if update.requests_per_second.is_some_and(|r| r > 1_000_000) {
        return Err(StoreError::Invalid(
            "requests_per_second is out of range: at most 1000000".into(),
        ));
    }
    if update.memory_mib.is_some_and(|m| m > 1 << 20) {
        return Err(StoreError::Invalid(
            "memory_mib is out of range: at most 1048576 (1 TiB)".into(),
        ));
    }
    let merged = tessera_api::TenantUpdate {
        weight: None,
        queued_tasks: update.queued_tasks.or(set.queued_tasks),
        running: update.running.or(set.running),
        memory_mib: update.memory_mib.or(set.memory_mib),
        deadline_seconds: update.deadline_seconds.or(set.deadline_seconds),
        log_bytes_per_job: update.log_bytes_per_job.or(set.log_bytes_per_job),
        component_bytes: update.component_bytes.or(set.component_bytes),
        requests_per_second: update.requests_per_second.or(set.requests_per_second),
    };
    Ok((weight, merged))
}

/// A tenant a shared claim may hand tasks of: its weight, its attempts running now, and how
/// many more its quota lets run (`None`: no cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimant {
    pub tenant: crate::store::TenantId,
    pub weight: u32,
    pub running: u64,
    pub room: Option<u64>,
}

/// Weighted fair share of running slots: how many of `slots` new tasks each tenant gets, by
/// water-filling — each slot goes to the tenant whose running attempts (with what it was
/// given so far) divided by its weight are fewest, ties to the earlier in `tenants` (the
/// caller rotates them, so that ties take turns). A tenant at its cap gets no more; a tenant
/// alone gets every slot (the share is work-conserving).
pub fn shares(slots: u32, tenants: &[Claimant]) -> Vec<(crate::store::TenantId, u32)> {
    let mut given = vec![0u64; tenants.len()];
    for _ in 0..slots {
        let mut best: Option<usize> = None;
        for (i, t) in tenants.iter().enumerate() {
            if t.weight == 0 || t.room.is_some_and(|room| given[i] >= room) {
                continue;
            }
            let load = |j: usize| u128::from(tenants[j].running + given[j]);
            let better = match best {
                None => true,
                // load_i / w_i < load_b / w_b, without division.
                Some(b) => load(i) * u128::from(tenants[b].weight) < load(b) * u128::from(t.weight),
            };
            if better {
                best = Some(i);
            }
        }
        let Some(b) = best else { break };
        given[b] += 1;
    }
    tenants
        .iter()
        .zip(given)
        .filter(|(_, n)| *n > 0)
        .map(|(t, n)| (t.tenant, n as u32))
        .collect()
}

/// The tenant a request asks to create, checked: a name of letters, digits, `-`, `_` and
/// `.` (it appears in URLs and on command lines), a weight of 1–1000.
pub fn new_tenant(
    tenant: &tessera_api::NewTenant,
    now: u64,
) -> Result<tessera_api::Tenant, StoreError> {
    let name = &tenant.name;
    let fits = !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !fits {
        return Err(StoreError::Invalid(format!(
            "tenant name {} is not valid: use 1 to 100 letters, digits, '-', '_' or '.'",
            limits::elide(name, 64)
        )));
    }
    let weight = tenant.weight.unwrap_or(1);
    if !(1..=1000).contains(&weight) {
        return Err(StoreError::Invalid(format!(
            "weight {weight} is out of range: use 1 to 1000"
        )));
    }
    Ok(tessera_api::Tenant {
        name: name.clone(),
        weight,
        created_at: now,
        quotas: tessera_api::Quotas::default(),
        usage: None,
    })
}

#[cfg(test)]
mod tests {

    use super::super::testing::*;

    use super::*;

    #[test]
    fn shares_level_running_slots_by_weight() {
        // A holds the whole fleet of 20; B arrives: every freed slot goes to B until they are
        // level, then they alternate (ties to the earlier, which the caller rotates).
        let a_full = [claimant(1, 1, 20, None), claimant(2, 1, 0, None)];
        assert_eq!(shares(1, &a_full), vec![(2, 1)]);
        assert_eq!(shares(10, &a_full), vec![(2, 10)]);
        let level = [claimant(1, 1, 10, None), claimant(2, 1, 10, None)];
        assert_eq!(shares(2, &level), vec![(1, 1), (2, 1)]);
        // Weight 3 against 1: three slots in four.
        let weighted = [claimant(1, 3, 0, None), claimant(2, 1, 0, None)];
        assert_eq!(shares(8, &weighted), vec![(1, 6), (2, 2)]);
        // Alone, a tenant takes every slot, however much it runs already.
        assert_eq!(shares(4, &[claimant(1, 1, 1000, None)]), vec![(1, 4)]);
        // A cap stops a tenant; the rest goes to the others, or nowhere.
        let capped = [claimant(1, 1, 0, Some(1)), claimant(2, 1, 5, None)];
        assert_eq!(shares(4, &capped), vec![(1, 1), (2, 3)]);
        assert_eq!(shares(4, &[claimant(1, 1, 0, Some(0))]), vec![]);
        assert_eq!(shares(0, &a_full), vec![]);
    }

    #[test]
    fn quotas_take_their_defaults_and_zero_removes_a_ceiling() {
        let d = tessera_api::Quotas::default();
        assert_eq!(quotas(&Default::default()), d);
        let set = tessera_api::TenantUpdate {
            running: Some(4),
            memory_mib: Some(64),
            ..Default::default()
        };
        let q = quotas(&set);
        assert_eq!((q.running, q.memory_mib), (Some(4), Some(64)));
        assert_eq!(q.queued_tasks, d.queued_tasks);
        let (weight, merged) = update_tenant(
            1,
            &set,
            &tessera_api::TenantUpdate {
                weight: Some(3),
                running: Some(0),
                queued_tasks: Some(10),
                ..Default::default()
            },
        )
        .unwrap();
        let q = quotas(&merged);
        assert_eq!(
            (weight, q.running, q.memory_mib, q.queued_tasks),
            (3, None, Some(64), 10)
        );
        for bad in [
            tessera_api::TenantUpdate {
                weight: Some(0),
                ..Default::default()
            },
            tessera_api::TenantUpdate {
                queued_tasks: Some(0),
                ..Default::default()
            },
            tessera_api::TenantUpdate {
                requests_per_second: Some(0),
                ..Default::default()
            },
        ] {
            assert!(update_tenant(1, &set, &bad).is_err(), "{bad:?}");
        }
    }
}
