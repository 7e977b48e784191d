//! Landed migrations are frozen (migrations/README.md): sqlx records the checksum of every
//! migration it applies, and refuses to start on a database whose applied migration's text has
//! changed since; both binaries migrate at start. This test pins the checksum sqlx computes
//! (SHA-384 of the file's bytes) of every migration that has landed on main.

/// `(version, file, SHA-384 of the file)` of every landed migration. A migration is added here
/// when it lands, and never changed afterwards.
const LANDED: &[(i64, &str, &str)] = &[
    (
        20261124000001,
        "20261124000001_init.sql",
        "d1f2f34f87c2b6e68c839f97c823c61a25910bddcdfb2030bf2eaa3ad25de42ef801649aac04d0ed78754c7eb8e76193",
    ),
    (
        20261124000002,
        "20261124000002_shell_sessions.sql",
        "c754d343a67b630d49a518a1cc635b225352e4729785809dbe352b31abd7ac49099a2dbcb08fce3706b6a4853c87abdd",
    ),
    (
        20261124000010,
        "20261124000010_workers.sql",
        "cb0000e70008580d12cd2af05311dee82d6644a1bc3cbc83b953fe395457050499d5c0206cb12ae76e7b5ece5b8e8e57",
    ),
    (
        20261124000011,
        "20261124000011_job_tokens.sql",
        "a2c5548fe02d599959abeacfcd3c270ca55f5dd4b6a0a782797d6acdd291a62962af766dad48bab2e28dc997f84e2537",
    ),
    (
        20261124000012,
        "20261124000012_event_ids_by_xid.sql",
        "332d2db376bf49f45949c771a80df5eabc4d7641b6ebf755e5eb1d445b26b063b4b9202f2830e0c6b228104b6a1fb707",
    ),
    (
        20261124000013,
        "20261124000013_one_round_trip_writes.sql",
        "bb3f7c219c344b9e3d310bf5e354985131668ad1d70ff25a5a6580f93f3433dcf8735f86e7effb315d8a233a8ab0d9ab",
    ),
    (
        20261125000014,
        "20261125000014_finish_with_last_lines.sql",
        "fd8a34d931d15384b38d7f545657d6cd07350413d4e55abfa200fa6d2d9e881980d24471c9adb00ab3fd59f39e36484d",
    ),
    (
        20261125000015,
        "20261125000015_idempotent_output_batches.sql",
        "523e82fff72e9eae2c421d899ecd4e6847e49f685cab3009814039cb429a75470454e346a85a830b6fa28424a04afb29",
    ),
    (
        20261126000020,
        "20261126000020_event_payload_bytes.sql",
        "03e122a203a5f0c7b043b8196300704ccf1b43a8c4dc0734206abe5e2a87365f125ebe920544b6babf35d68cd3a39b55",
    ),
    (
        20261202000030,
        "20261202000030_job_state_machine.sql",
        "27477fb62c6751121894e54df79b681eb5bd2525969faeca1f79be0cd131d070fc7e299a38913e6ea51ff15b7fe9d4f2",
    ),
    (
        20261202000031,
        "20261202000031_drop_dead_overloads.sql",
        "efbb7d8235354909cd42b0e374e07fd9b34afc6eae82040010ecfc3c82f8588e17fb42389d26700ff4ac943f745c5b77",
    ),
    (
        20261202000040,
        "20261202000040_follow_ups_and_budgets.sql",
        "611fdb877941eb95d4765ede544515ce69d2830385d915b78b7ab77b7007af6161caad33d9e33e1b9d7c8e38fe1f4e46",
    ),
    (
        20261202000041,
        "20261202000041_job_checkpoints.sql",
        "3acec77573478b5e2d15069ebb38740ca2fed1947cfcd9a881d6dc68989ed1b1c7977532569d84d6c8349c7edb55f342",
    ),
    (
        20261202000042,
        "20261202000042_finish_records_the_checkpoint.sql",
        "7b4941c8160cf9a6be858eb2c5beef499ea7b5c2c120a1845d2c2a30e7c9220ffe52fcbf13fb82c0e491e75c937cfafb",
    ),
    (
        20261202000050,
        "20261202000050_idempotency_and_audit.sql",
        "70f81a9ebeb2d9706287f1333848dba50c15a29b1faef309cd6eb8bb8059d79490250de9d72ebe7aaee88ca0a969a96e",
    ),
    (
        20261202000051,
        "20261202000051_webhooks.sql",
        "4a4ab6da0df31ffb20b57cfe757c4fd306647e5d114240bc8969aa09489e44064df3fc4bf27694e42955e13d7ca594cc",
    ),
    (
        20261202000090,
        "20261202000090_fair_shares.sql",
        "f474f65f2a5fefc8929eb8f5187aaf0b3435618f2f3dedc00aab9e05e59b22d306cd3e4922985fba7ad77ff4b749f00b",
    ),
    (
        20261203000095,
        "20261203000095_watchdogs.sql",
        "0cc85066192ab7e246553941089713572507b0ea41c83a9fbbe6f356c7fdd64d2e1f6b9ee17a78a6320051a1d588b699",
    ),
    (
        20261203000096,
        "20261203000096_rate_limit_gates.sql",
        "99cef10b7492bbda459d8d0d156276712755dfc45fe7e3c5478cace3883f199f44ffaeaee14efda527c0d9177419b268",
    ),
    (
        20261203000097,
        "20261203000097_retention.sql",
        "8b3a813a2c41e72e8dcb6eb3113b82d1d3591437a4e9da6735ddc0c40342850244cc8926a168db1102347fdd34c926a4",
    ),
    (
        20261203000098,
        "20261203000098_retention_checkpoints.sql",
        "40dca10aea42b06d6055e4cbcf94751f69f0e32227b42a59631dcf0179f8dae4ba771b650d6d91f632537b22bf057ffb",
    ),
];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn landed_migrations_are_never_edited() {
    for &(version, file, pinned) in LANDED {
        let Some(migration) = otter_core::MIGRATOR.iter().find(|m| m.version == version) else {
            panic!(
                "migrations/{file} is gone or renumbered: never edit a landed migration, add a new one (migrations/README.md)"
            );
        };
        assert_eq!(
            hex(&migration.checksum),
            pinned,
            "migrations/{file} changed: never edit a landed migration, add a new one (migrations/README.md)"
        );
    }
}

#[test]
fn new_migrations_come_after_the_landed_ones() {
    let last = LANDED.iter().map(|&(version, ..)| version).max().unwrap();
    for migration in otter_core::MIGRATOR.iter() {
        let landed = LANDED
            .iter()
            .any(|&(version, ..)| version == migration.version);
        assert!(
            landed || migration.version > last,
            "migration {} ({}) sorts among the landed ones: give a new migration a timestamp after {last}",
            migration.version,
            migration.description
        );
    }
}
