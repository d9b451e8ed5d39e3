use crate::util::{run, scenario};

const GROUP: &str =
    "oiK77Oy7rBw8YB6IS6ukRChAw+Yq6GC61RMrPLSTiOOtdI+XDu0LmLuNm11p+qv2I+adqGUdZHm46zXAQdZoOA==";

#[test]
fn derive_prints_the_four_seed_vectors() {
    let r = run(&[
        "keys",
        "derive",
        "--group-key",
        GROUP,
        "breakroom499-contoso-tstrsd-007",
        "mainbuilding167-contoso-hpsd-088",
        "contoso-toaster-007",
        "contoso-heatpump-088",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "breakroom499-contoso-tstrsd-007 : JC8F96eayuQwwz+PkE7IzjH2lIAjCUnAa61tDigBnSs=\n\
         mainbuilding167-contoso-hpsd-088 : 6uejA9PfkQgmYylj8Zerp3kcbeVrGZ172YLa7VSnJzg=\n\
         contoso-toaster-007 : NXZgydIn9ntUpXfBsWFfaxJqAYVfgGQsshvA5GboGJI=\n\
         contoso-heatpump-088 : NI9dUEI2tga168Qi1U/HKuMmFHewrvaqI1MPTEU1A5w=\n"
    );
    // The 2020 tutorial's published pair (the 2018 keys reused) is not what we print.
    assert!(!r.stdout.contains("contoso-toaster-007 : JC8F96"));
}

#[test]
fn derive_refuses_a_bad_key() {
    let r = run(&["keys", "derive", "--group-key", "nope!", "dev1"]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("--group-key") && r.stderr.contains("base64"),
        "{}",
        r.stderr
    );
}

#[test]
fn export_writes_the_whole_population() {
    let r = run(&[
        "keys",
        "export",
        scenario("contoso-tutorial-2020.toml").to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines[0], "registration_id,device_key");
    assert_eq!(lines.len(), 1 + 999 * 2);
    assert!(lines.contains(&"contoso-toaster-007,NXZgydIn9ntUpXfBsWFfaxJqAYVfgGQsshvA5GboGJI="));
    assert!(lines.contains(&"contoso-heatpump-088,NI9dUEI2tga168Qi1U/HKuMmFHewrvaqI1MPTEU1A5w="));
}

#[test]
fn export_writes_each_registration_id_once() {
    // contoso.toml: 4,000 toasters, 4,000 heat pumps, 200 unrecognised devices, and 200 toasters
    // that re-register (the same IDs again): 8,200 distinct IDs.
    let r = run(&["keys", "export", scenario("contoso.toml").to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().skip(1).collect();
    assert_eq!(lines.len(), 8200);
    let distinct: std::collections::HashSet<&str> =
        lines.iter().map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(distinct.len(), 8200);
}
