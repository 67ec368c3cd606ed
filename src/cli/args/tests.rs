use super::*;
use clap::CommandFactory;

#[test]
fn the_command_tree_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn ranges_and_probabilities() {
    let r = parse_range("1M,4K").unwrap();
    assert_eq!((r.offset, r.length), (1 << 20, Some(4096)));
    assert_eq!(parse_range("512").unwrap().length, None);
    assert!(
        parse_range("1M,x")
            .unwrap_err()
            .contains("invalid size \"x\"")
    );
    assert_eq!(parse_probability("0.25"), Ok(0.25));
    assert!(parse_probability("1.5").is_err());
    assert!(parse_probability("NaN").is_err());
}

#[test]
fn timeouts() {
    use std::time::Duration;
    let t = |s: &str| parse_timeout(s).map(|t| t.0);
    assert_eq!(t("30s"), Ok(Some(Duration::from_secs(30))));
    assert_eq!(t("30"), Ok(Some(Duration::from_secs(30))));
    assert_eq!(t("10m"), Ok(Some(Duration::from_secs(600))));
    assert_eq!(t("2h"), Ok(Some(Duration::from_secs(7200))));
    assert_eq!(t("250ms"), Ok(Some(Duration::from_millis(250))));
    assert_eq!(t("0"), Ok(None));
    assert_eq!(t("0s"), Ok(None));
    for bad in [
        "",
        "s",
        "-1s",
        "1.5m",
        "10 minutes",
        "1d",
        "99999999999999999999h",
    ] {
        let e = t(bad).unwrap_err();
        assert!(
            e.starts_with(&format!("invalid duration {bad:?}")),
            "{bad}: {e}"
        );
    }
    // The default bounds job wait.
    let cli = Cli::try_parse_from(["ferrosan", "job", "wait", "3"]).unwrap();
    let Command::Job(JobCmd::Wait { id: 3, timeout }) = cli.command else {
        panic!("{cli:?}");
    };
    assert_eq!(timeout.0, Some(Duration::from_secs(600)));
    let cli = Cli::try_parse_from(["ferrosan", "job", "wait", "3", "--timeout", "0"]).unwrap();
    let Command::Job(JobCmd::Wait { timeout, .. }) = cli.command else {
        panic!("{cli:?}");
    };
    assert_eq!(timeout.0, None);
}

#[test]
fn global_flags_go_anywhere() {
    let cli = Cli::try_parse_from(["ferrosan", "disk", "list", "--json", "--pool", "/p"]).unwrap();
    assert!(cli.json);
    assert_eq!(cli.pool, PathBuf::from("/p"));
}

#[test]
fn sizes_and_lists_parse() {
    let cli = Cli::try_parse_from([
        "ferrosan",
        "group",
        "create",
        "g0",
        "--raid",
        "raid5",
        "--disks",
        "a,b,c",
        "--stripe-size",
        "64K",
    ])
    .unwrap();
    match cli.command {
        Command::Group(GroupCmd::Create(args)) => {
            let req = args.request();
            assert_eq!(req.raid, RaidLevelName::Raid5);
            assert_eq!(req.disks, ["a", "b", "c"]);
            assert_eq!(req.stripe_size, Some(65536));
        }
        other => panic!("parsed as {other:?}"),
    }
}

#[test]
fn copy_create_parses_modes_and_schemes() {
    let argv = [
        "ferrosan",
        "copy",
        "create",
        "v0",
        "c0",
        "--mode",
        "a1",
        "--meta",
        "multilevel-bitmap",
        "--read-only",
        "--pool-group",
        "g1",
    ];
    match Cli::try_parse_from(argv).unwrap().command {
        Command::Copy(CopyCmd::Create(args)) => {
            let req = args.request();
            assert_eq!((req.source.as_str(), req.name.as_str()), ("v0", "c0"));
            assert_eq!(req.mode, Some(CopyMode::Cow));
            assert_eq!(req.meta, Some(Scheme::MultilevelBitmap));
            assert!(req.read_only);
            assert_eq!(req.pool_group.as_deref(), Some("g1"));
        }
        other => panic!("parsed as {other:?}"),
    }
    let argv = ["ferrosan", "copy", "create", "v0", "c0"];
    match Cli::try_parse_from(argv).unwrap().command {
        Command::Copy(CopyCmd::Create(args)) => {
            let req = args.request();
            assert_eq!((req.mode, req.meta, req.read_only), (None, None, false));
        }
        other => panic!("parsed as {other:?}"),
    }
}

#[test]
fn copy_names_that_do_not_parse_are_usage_errors_naming_the_choices() {
    let err = |argv: &[&str]| {
        let e = Cli::try_parse_from(argv).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{argv:?}");
        e.to_string()
    };
    let msg = err(&["ferrosan", "copy", "create", "v", "c", "--meta", "btree"]);
    assert!(
        msg.contains(
            "use full-pointer, changed-pointer, bitmap, multilevel-bitmap or partial-bitmap"
        ),
        "{msg}"
    );
    let msg = err(&["ferrosan", "copy", "create", "v", "c", "--mode", "mirror"]);
    assert!(msg.contains("use cow or row"), "{msg}");
    let msg = err(&["ferrosan", "copy", "split", "c", "--policy", "biggest"]);
    assert!(msg.contains("use move-smaller or move-larger"), "{msg}");
}

#[test]
fn usage_errors_say_what_is_wrong() {
    let err = Cli::try_parse_from(["ferrosan", "disk", "add", "d0", "--size", "12Q"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("invalid size \"12Q\": use a number and a unit: K, M, G, T, P or KiB"),
        "{err}"
    );
    let err = Cli::try_parse_from(["ferrosan", "disk", "add", "d0"]).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    let both = [
        "ferrosan", "disk", "add", "d0", "--size", "1G", "--path", "/x",
    ];
    assert!(Cli::try_parse_from(both).is_err());
    let err = Cli::try_parse_from(["ferrosan", "group", "create", "g", "--raid", "raid9"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown RAID level"), "{err}");
}

/// Every size argument, with `VALUE` where the size goes.
const SIZE_ARGS: [&[&str]; 8] = [
    &["ferrosan", "disk", "add", "d0", "--size", "VALUE"],
    &[
        "ferrosan", "volume", "create", "v", "--group", "g", "--size", "VALUE",
    ],
    &[
        "ferrosan",
        "volume",
        "create",
        "v",
        "--group",
        "g",
        "--size",
        "1G",
        "--track-size",
        "VALUE",
    ],
    &["ferrosan", "volume", "grow", "v", "--size", "VALUE"],
    &[
        "ferrosan",
        "group",
        "create",
        "g",
        "--raid",
        "raid5",
        "--disks",
        "a,b,c",
        "--stripe-size",
        "VALUE",
    ],
    &["ferrosan", "job", "rate", "3", "VALUE"],
    &[
        "ferrosan",
        "disk",
        "inject",
        "d0",
        "--read-error-at",
        "VALUE",
    ],
    &[
        "ferrosan",
        "disk",
        "inject",
        "d0",
        "--write-error-at",
        "4K,VALUE",
    ],
];

fn with_value(argv: &[&str], value: &str) -> Vec<String> {
    argv.iter().map(|a| a.replace("VALUE", value)).collect()
}

#[test]
fn a_negative_size_is_called_negative_wherever_a_size_goes() {
    for argv in SIZE_ARGS {
        for value in ["-1", "-1G", "-0.5GB"] {
            let err = Cli::try_parse_from(with_value(argv, value)).unwrap_err();
            let msg = err.to_string();
            assert_eq!(err.exit_code(), 2, "{argv:?}");
            assert!(
                msg.contains(&format!(
                    "size {value} is negative: give a size of 0 or more"
                )),
                "{argv:?}: {msg}"
            );
            assert!(!msg.contains("-- "), "no hint to pass it after --: {msg}");
        }
        assert!(
            Cli::try_parse_from(with_value(argv, "64K")).is_ok(),
            "{argv:?}"
        );
    }
    let err = Cli::try_parse_from(["ferrosan", "disk", "inject", "d0", "--error-rate", "-0.5"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid probability \"-0.5\""), "{err}");
}

#[test]
fn gb_is_decimal_and_g_binary_in_every_size_argument() {
    let cli = Cli::try_parse_from(["ferrosan", "disk", "add", "d0", "--size", "10GB"]).unwrap();
    let Command::Disk(DiskCmd::Add(add)) = cli.command else {
        panic!("parsed as {:?}", cli.command);
    };
    assert_eq!(add.request().size, Some(10_000_000_000));
    let cli = Cli::try_parse_from(["ferrosan", "job", "rate", "3", "100M"]).unwrap();
    let Command::Job(JobCmd::Rate { bytes_per_sec, .. }) = cli.command else {
        panic!("parsed as {:?}", cli.command);
    };
    assert_eq!(bytes_per_sec, 100 << 20);
}

/// Every command's long help (`--help`), by its path: `ferrosan copy create`.
fn every_help() -> Vec<(String, String)> {
    fn walk(cmd: &mut clap::Command, path: String, out: &mut Vec<(String, String)>) {
        out.push((path.clone(), cmd.render_long_help().to_string()));
        for sub in cmd.get_subcommands_mut() {
            let p = format!("{path} {}", sub.get_name());
            walk(sub, p, out);
        }
    }
    let mut cmd = Cli::command();
    cmd.build();
    let mut out = Vec::new();
    walk(&mut cmd, "ferrosan".to_owned(), &mut out);
    out
}

#[test]
fn help_texts_speak_an_administrators_words() {
    let helps = every_help();
    assert!(helps.len() > 35, "every noun and verb: {}", helps.len());
    let jargon = [
        "seed",
        "T1",
        "A1",
        "A2",
        "N_orig",
        "N_copy",
        "initial area",
        "US 6",
        "FIG",
        "load point",
    ];
    for (path, help) in &helps {
        for word in jargon {
            assert!(
                !help.contains(word),
                "`{path} --help` says {word:?}:\n{help}"
            );
        }
    }
}

#[test]
fn every_argument_says_what_it_is() {
    let mut cmd = Cli::command();
    cmd.build();
    let mut stack = vec![cmd];
    while let Some(c) = stack.pop() {
        for a in c.get_arguments() {
            let id = a.get_id().as_str();
            let said = a.get_help().or(a.get_long_help()).is_some();
            assert!(
                said || a.is_hide_set() || id == "help" || id == "version",
                "{} {id}",
                c.get_name()
            );
        }
        stack.extend(c.get_subcommands().cloned());
    }
}

#[test]
fn serve_help_documents_rust_log_and_has_no_json() {
    let helps = every_help();
    let help = |path: &str| {
        helps
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, h)| h.clone())
            .unwrap_or_else(|| panic!("no help for {path}"))
    };
    let serve = help("ferrosan serve");
    for want in [
        "RUST_LOG=debug",
        "RUST_LOG=ferrosan=debug",
        "RUST_LOG=info",
        "stderr",
    ] {
        assert!(serve.contains(want), "serve --help lacks {want}:\n{serve}");
    }
    let lists_json = |h: &str| h.lines().any(|l| l.trim_start().starts_with("--json"));
    assert!(!lists_json(&serve), "{serve}");
    assert!(
        serve.contains("On a new, empty pool"),
        "the long description: {serve}"
    );
    assert!(lists_json(&help("ferrosan volume list")));
    assert!(help("ferrosan").contains("10GB = 10 x 10^9 bytes"));
}

#[test]
fn json_is_refused_by_serve_wherever_it_is_given() {
    for argv in [
        &["ferrosan", "serve", "--json"][..],
        &["ferrosan", "--json", "serve"],
    ] {
        let cli = Cli::try_parse_from(argv).unwrap();
        let Command::Serve(args) = &cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        assert!(cli.json || args.json, "{argv:?}");
    }
    let cli = Cli::try_parse_from(["ferrosan", "serve"]).unwrap();
    let Command::Serve(args) = &cli.command else {
        panic!("parsed as {:?}", cli.command);
    };
    assert!(!cli.json && !args.json);
}
