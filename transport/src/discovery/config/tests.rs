use super::*;
use std::collections::HashMap;

fn cfg(vars: &[(&str, &str)]) -> Result<DiscoveryConfig, ConfigError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    DiscoveryConfig::from_lookup(|k| map.get(k).cloned())
}

fn var_of(e: ConfigError) -> &'static str {
    match e {
        ConfigError::Invalid { var, .. }
        | ConfigError::Missing { var, .. }
        | ConfigError::Unused { var, .. } => var,
        ConfigError::Inconsistent(_) | ConfigError::FeatureDisabled { .. } => "",
    }
}

#[test]
fn defaults_are_loopback() {
    let c = cfg(&[]).expect("defaults");
    assert_eq!(c.mode, DiscoveryMode::Loopback { port: DEFAULT_PORT });
    assert_eq!(c.heartbeat, Duration::from_secs(1));
    assert_eq!(c.node_timeout, Duration::from_secs(3));
    assert!(c.secret.is_none());
    assert_eq!(DiscoveryConfig::default().mode, c.mode);
}

#[test]
fn every_mode_parses() {
    let c = cfg(&[
        ("PLUME_DISCOVERY", "multicast"),
        ("PLUME_MULTICAST_IFACE", "10.77.1.2"),
        ("PLUME_MULTICAST_ADDR", "239.1.2.3:5000"),
        ("PLUME_HEARTBEAT_MS", "100"),
        ("PLUME_NODE_TIMEOUT_MS", "400"),
        ("PLUME_MESH_SECRET", "s3cret"),
    ])
    .expect("multicast");
    assert_eq!(
        c.mode,
        DiscoveryMode::Multicast {
            group: Ipv4Addr::new(239, 1, 2, 3),
            port: 5000,
            iface: Ipv4Addr::new(10, 77, 1, 2)
        }
    );
    assert_eq!(c.heartbeat, Duration::from_millis(100));
    assert_eq!(c.secret.as_deref(), Some(&b"s3cret"[..]));
    // Naming an interface alone opts into multicast.
    let c = cfg(&[("PLUME_MULTICAST_IFACE", "10.0.0.1")]).expect("implied multicast");
    assert!(matches!(
        c.mode,
        DiscoveryMode::Multicast {
            group: DEFAULT_GROUP,
            port: DEFAULT_PORT,
            ..
        }
    ));
    let c = cfg(&[
        ("PLUME_SEEDS", "127.0.0.1:7000, 127.0.0.2:7001"),
        ("PLUME_DISCOVERY_LISTEN", "127.0.0.1:7002"),
    ])
    .expect("seeds");
    assert_eq!(
        c.mode,
        DiscoveryMode::Seeds {
            listen: "127.0.0.1:7002".parse().expect("addr"),
            seeds: vec![
                "127.0.0.1:7000".parse().expect("addr"),
                "127.0.0.2:7001".parse().expect("addr")
            ],
        }
    );
    let c = cfg(&[("PLUME_SEEDS", "localhost:7000")]).expect("host name");
    assert!(
        matches!(c.mode, DiscoveryMode::Seeds { ref seeds, .. } if seeds.iter().all(|a| a.ip().is_loopback() && a.port() == 7000))
    );
    let c = cfg(&[("PLUME_DISCOVERY_PORT", "9999")]).expect("port");
    assert_eq!(c.mode, DiscoveryMode::Loopback { port: 9999 });
}

#[test]
fn errors_name_the_variable() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("PLUME_DISCOVERY", "broadcast")], "PLUME_DISCOVERY"),
        (&[("PLUME_DISCOVERY", "")], "PLUME_DISCOVERY"),
        (&[("PLUME_DISCOVERY", "multicast")], "PLUME_MULTICAST_IFACE"),
        (
            &[("PLUME_MULTICAST_IFACE", "eth0")],
            "PLUME_MULTICAST_IFACE",
        ),
        (
            &[
                ("PLUME_MULTICAST_IFACE", "10.0.0.1"),
                ("PLUME_MULTICAST_ADDR", "10.0.0.9:1"),
            ],
            "PLUME_MULTICAST_ADDR",
        ),
        (
            &[
                ("PLUME_MULTICAST_IFACE", "10.0.0.1"),
                ("PLUME_MULTICAST_ADDR", "224.0.0.9:1"),
            ],
            "PLUME_MULTICAST_ADDR",
        ),
        (
            &[
                ("PLUME_MULTICAST_IFACE", "10.0.0.1"),
                ("PLUME_MULTICAST_ADDR", "239.0.0.9"),
            ],
            "PLUME_MULTICAST_ADDR",
        ),
        (&[("PLUME_SEEDS", "127.0.0.1:1,")], "PLUME_SEEDS"),
        (&[("PLUME_SEEDS", "127.0.0.1")], "PLUME_SEEDS"),
        (
            &[
                ("PLUME_DISCOVERY", "seeds"),
                ("PLUME_DISCOVERY_LISTEN", "nowhere"),
            ],
            "PLUME_DISCOVERY_LISTEN",
        ),
        (&[("PLUME_HEARTBEAT_MS", "1s")], "PLUME_HEARTBEAT_MS"),
        (&[("PLUME_HEARTBEAT_MS", "0")], "PLUME_HEARTBEAT_MS"),
        (&[("PLUME_NODE_TIMEOUT_MS", "-5")], "PLUME_NODE_TIMEOUT_MS"),
        (&[("PLUME_MESH_SECRET", "")], "PLUME_MESH_SECRET"),
        (&[("PLUME_DISCOVERY_PORT", "70000")], "PLUME_DISCOVERY_PORT"),
        (
            &[
                ("PLUME_DISCOVERY", "loopback"),
                ("PLUME_SEEDS", "127.0.0.1:1"),
            ],
            "PLUME_SEEDS",
        ),
        (
            &[
                ("PLUME_DISCOVERY", "seeds"),
                ("PLUME_MULTICAST_IFACE", "10.0.0.1"),
            ],
            "PLUME_MULTICAST_IFACE",
        ),
    ];
    for (vars, var) in cases {
        let e = cfg(vars).expect_err("must be refused");
        assert!(e.to_string().contains(var), "{vars:?}: {e}");
        assert_eq!(var_of(e), *var, "{vars:?}");
    }
    let e = cfg(&[
        ("PLUME_HEARTBEAT_MS", "1000"),
        ("PLUME_NODE_TIMEOUT_MS", "1000"),
    ])
    .expect_err("flapping");
    assert!(e.to_string().contains("PLUME_NODE_TIMEOUT_MS"), "{e}");
    let e = cfg(&[
        ("PLUME_MULTICAST_IFACE", "10.0.0.1"),
        ("PLUME_SEEDS", "127.0.0.1:1"),
    ])
    .expect_err("ambiguous");
    assert!(matches!(e, ConfigError::Inconsistent(_)));
}

#[test]
fn debug_hides_the_secret() {
    let c = cfg(&[("PLUME_MESH_SECRET", "hunter2")]).expect("ok");
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
#[cfg(all(feature = "nats", feature = "redis"))]
fn nats_and_redis_urls_default_and_imply_their_backend() {
    let c = cfg(&[("PLUME_DISCOVERY", "nats")]).expect("ok");
    assert_eq!(
        c.mode,
        DiscoveryMode::Nats {
            url: DEFAULT_NATS_URL.into()
        }
    );
    let c = cfg(&[("PLUME_DISCOVERY", "redis")]).expect("ok");
    assert_eq!(
        c.mode,
        DiscoveryMode::Redis {
            url: DEFAULT_REDIS_URL.into()
        }
    );
    let c = cfg(&[("PLUME_NATS_URL", "nats://10.0.0.1:4222")]).expect("implied");
    assert_eq!(
        c.mode,
        DiscoveryMode::Nats {
            url: "nats://10.0.0.1:4222".into()
        }
    );
    let c = cfg(&[("PLUME_REDIS_URL", "redis://h:1")]).expect("implied");
    assert_eq!(
        c.mode,
        DiscoveryMode::Redis {
            url: "redis://h:1".into()
        }
    );
}

#[test]
fn bad_or_conflicting_server_urls_name_their_variable() {
    let e = cfg(&[("PLUME_DISCOVERY", "nats"), ("PLUME_NATS_URL", "http://x")]);
    assert_eq!(var_of(e.expect_err("scheme")), "PLUME_NATS_URL");
    let e = cfg(&[
        ("PLUME_DISCOVERY", "redis"),
        ("PLUME_REDIS_URL", "redis://"),
    ]);
    assert_eq!(var_of(e.expect_err("no host")), "PLUME_REDIS_URL");
    let e = cfg(&[
        ("PLUME_DISCOVERY", "nats"),
        ("PLUME_REDIS_URL", "redis://h:1"),
    ]);
    assert_eq!(var_of(e.expect_err("unused")), "PLUME_REDIS_URL");
    let e = cfg(&[
        ("PLUME_DISCOVERY", "loopback"),
        ("PLUME_NATS_URL", "nats://h:1"),
    ]);
    assert_eq!(var_of(e.expect_err("unused")), "PLUME_NATS_URL");
    let e = cfg(&[
        ("PLUME_NATS_URL", "nats://h:1"),
        ("PLUME_SEEDS", "127.0.0.1:9"),
    ]);
    assert!(matches!(e, Err(ConfigError::Inconsistent(_))));
}

/// Without its Cargo feature, a backend is an error naming the feature, never another backend.
#[test]
#[cfg(any(not(feature = "nats"), not(feature = "redis")))]
fn a_backend_without_its_feature_is_an_error_naming_it() {
    for (mode, url_var, enabled) in [
        ("nats", "PLUME_NATS_URL", cfg!(feature = "nats")),
        ("redis", "PLUME_REDIS_URL", cfg!(feature = "redis")),
    ] {
        if enabled {
            continue;
        }
        let e = cfg(&[("PLUME_DISCOVERY", mode)]).expect_err(mode);
        assert_eq!(
            e,
            ConfigError::FeatureDisabled {
                mode: if mode == "nats" { "nats" } else { "redis" },
                feature: if mode == "nats" { "nats" } else { "redis" },
            }
        );
        assert!(
            e.to_string()
                .contains(&format!("`{mode}` feature of plume-transport")),
            "{e}"
        );
        // Implied by its URL variable: the same error.
        let url = format!("{mode}://127.0.0.1:1");
        let e = cfg(&[(url_var, url.as_str())]).expect_err(url_var);
        assert!(matches!(e, ConfigError::FeatureDisabled { .. }), "{e}");
    }
}
