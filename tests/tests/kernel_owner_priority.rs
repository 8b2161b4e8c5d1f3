//! The owner task takes incremental writes (`add_container_rules`, what the DNS proxy will send
//! for an answer it lets through) ahead of bulk writes: with thousands of policy rewrites queued,
//! one incremental write is applied after a handful of them, not after the backlog. Against the
//! real kernel, with the enforcer in process. It sends no traffic (no address slot).
//! Run as root, serially: `cargo test -p egress-tests -- --test-threads=1`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use egress_agent::{
    enforcer::{Enforcer, EnforcerConfig},
    owner,
};
use egress_policy::policy::{Mode, Policy, Rule, parse_ip_entries};
use egress_tests::lab::{Lab, container_id};

/// Bulk rewrites queued before the incremental write (far more than the bulk queue holds).
const BULK: usize = 20_000;
/// The incremental write is sent once this many of them are done (the owner is busy).
const BUSY_AFTER: usize = 200;

fn policy(entries: &str) -> Policy {
    Policy::new(Mode::Enforce, parse_ip_entries(entries).expect("entries"))
}

#[test]
fn an_incremental_write_is_applied_ahead_of_a_backlog_of_bulk_writes() {
    let lab = Lab::bare("owner-priority", 0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async {
        let cfg = EnforcerConfig {
            pin_dir: lab.pins.path.clone(),
            attach_cgroup: lab.parent().path.clone(),
        };
        let (enforcer, _report) = Enforcer::open(&cfg).expect("Enforcer::open");
        let (handle, task) = owner::spawn(enforcer);
        let (answered, busy) = (container_id(0, 1), container_id(0, 2));
        handle
            .set_container(answered, Some(policy("10.0.0.5:443")), vec![])
            .await
            .expect("registering the container the answer is for");

        // A backlog of real rewrites (one rule in, one out, each time) of another container.
        let done = Arc::new(AtomicUsize::new(0));
        let mut bulk = tokio::task::JoinSet::new();
        for i in 0..BULK {
            let (handle, done) = (handle.clone(), done.clone());
            let entries = if i % 2 == 0 { "10.0.1.1" } else { "10.0.1.2" };
            bulk.spawn(async move {
                let r = handle
                    .set_container(busy, Some(policy(entries)), vec![])
                    .await;
                done.fetch_add(1, Ordering::SeqCst);
                r
            });
        }
        while done.load(Ordering::SeqCst) < BUSY_AFTER {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }

        let before = done.load(Ordering::SeqCst);
        let rule: Rule = parse_ip_entries("192.0.2.7:443").unwrap()[0];
        let applied = handle
            .add_container_rules(answered, vec![rule])
            .await
            .expect("the incremental write");
        let after = done.load(Ordering::SeqCst);
        assert!(applied, "the container is policed");
        assert!(
            BULK - before > 1_000,
            "inconclusive: only {} bulk writes were left when the incremental one was sent",
            BULK - before
        );
        // In one queue it would wait for all of them; ahead of them, for the one being applied
        // (what the count adds is how far the bulk tasks got while this one woke up).
        assert!(
            after - before < (BULK - before) / 10,
            "the incremental write waited for {} bulk writes (of {} queued)",
            after - before,
            BULK - before
        );

        while let Some(r) = bulk.join_next().await {
            r.expect("a bulk task").expect("a bulk write");
        }
        let known = handle.containers().await.expect("containers");
        let (_, applied) = known
            .iter()
            .find(|(id, _)| *id == answered)
            .expect("still registered");
        let rules = &applied.as_ref().expect("policed").policy.rules;
        assert!(
            rules.contains(&rule) && rules.contains(&parse_ip_entries("10.0.0.5:443").unwrap()[0]),
            "the answer's rule is added to the policy, which keeps its own: {rules:?}"
        );
        // A bulk rewrite of the container replaces its policy as a whole.
        handle
            .set_container(answered, Some(policy("10.0.0.5:443")), vec![])
            .await
            .unwrap();
        let known = handle.containers().await.unwrap();
        let (_, applied) = known.iter().find(|(id, _)| *id == answered).unwrap();
        assert!(!applied.as_ref().unwrap().policy.rules.contains(&rule));
        // Not policed: nothing to add to.
        handle.set_container(busy, None, vec![]).await.unwrap();
        assert!(!handle.add_container_rules(busy, vec![rule]).await.unwrap());

        drop(handle);
        task.await.expect("the owner task");
    });
}
