//! The mode matrix: the same DPS rules in every mode. Every row of the troubleshooting table, a
//! disabled group, a disabled individual enrollment, a re-registering device and an unknown device
//! run in webhook, mqtt and https modes; each class ends the same way in all three (status and
//! code, hub) and meets its expectation (which names the device ID and substatus where they
//! matter).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::util::{run_file, scenario, summary, tempdir};

const TOASTERS: &str = "contoso-toasters-hub-1098.azure-devices.net";

/// contoso-faults.toml plus an unknown device and a re-registering toaster, in `mode`.
fn faults(dir: &Path, mode: &str) -> PathBuf {
    let text = std::fs::read_to_string(scenario("contoso-faults.toml")).unwrap();
    let text = text.split("\n[thresholds]").next().unwrap().to_owned();
    let target = match mode {
        "webhook" => String::new(),
        m => format!("mode = \"{m}\"\npoll_cap = \"50ms\"\ndevice_timeout = \"20s\"\n"),
    };
    let text = text.replacen("[target]\n", &format!("[target]\n{target}"), 1)
        + &format!(
            r#"
[emulator]
retry_after = 1

[[devices]]
class = "unknown"
id = "lobby{{n}}-contoso-kettle-001"
count = 5
expect = {{ status = "failed", error_code = 400207, error_message = "status code: 400" }}

[[devices]]
class = "reprovision"
id = "ok{{n}}-contoso-tstrsd-007"
range = [1, 5]
current = {{ hub = "contoso-heatpumps-hub-1098.azure-devices.net" }}
expect = {{ status = "assigned", hub = "{TOASTERS}" }}
"#
        );
    let file = dir.join(format!("faults-{mode}.toml"));
    std::fs::write(&file, text).unwrap();
    file
}

/// A disabled enrollment group beside an enabled individual enrollment.
fn disabled_group(dir: &Path, mode: &str) -> PathBuf {
    let target = match mode {
        "webhook" => String::new(),
        m => format!("[target]\nmode = \"{m}\"\npoll_cap = \"50ms\"\n"),
    };
    let text = format!(
        r#"name = "disabled-group"
{target}
[enrollment]
group_id = "contoso-custom-allocated-devices"
primary_key = "oiK77Oy7rBw8YB6IS6ukRChAw+Yq6GC61RMrPLSTiOOtdI+XDu0LmLuNm11p+qv2I+adqGUdZHm46zXAQdZoOA=="
iot_hubs = ["{TOASTERS}", "contoso-heatpumps-hub-1098.azure-devices.net"]
provisioning_status = "disabled"

[[individual_enrollments]]
registration_id = "lab1-contoso-tstrsd-007"
primary_key = "NI9dUEI2tga168Qi1U/HKuMmFHewrvaqI1MPTEU1A5w="
device_id = "toaster-in-the-lab"

[[devices]]
class = "group-disabled"
id = "breakroom{{n}}-contoso-tstrsd-007"
count = 5
expect = {{ status = "disabled" }}

[[devices]]
class = "individual-enabled"
id = "lab1-contoso-tstrsd-007"
expect = {{ status = "assigned", device_id = "toaster-in-the-lab", hub = "{TOASTERS}" }}

[load]
rate = 100
"#
    );
    let file = dir.join(format!("disabled-group-{mode}.toml"));
    std::fs::write(&file, text).unwrap();
    file
}

/// Per class: (outcome keys, hubs).
type Ends = BTreeMap<String, (Vec<String>, Vec<String>)>;

/// How each class ended, after checking every expectation was met.
fn ends(v: &Value, mode: &str) -> Ends {
    v["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let name = c["name"].as_str().unwrap().to_owned();
            assert_eq!(c["failed"], 0, "{mode} {name}: {c}");
            assert!(c["requests"].as_u64().unwrap() > 0, "{mode} {name}: {c}");
            let keys = |k: &str| -> Vec<String> {
                c[k].as_object()
                    .map(|o| o.keys().cloned().collect())
                    .unwrap_or_default()
            };
            (name, (keys("outcomes"), keys("hubs")))
        })
        .collect()
}

fn run_in(file: &Path, dir: &Path) -> Value {
    let out = dir.join(format!(
        "report-{}",
        file.file_stem().unwrap().to_str().unwrap()
    ));
    let r = run_file(file, &out);
    assert_eq!(r.code, 0, "{}\n{}\n{}", file.display(), r.stdout, r.stderr);
    summary(&out)
}

#[test]
fn every_mode_applies_the_same_dps_rules() {
    let dir = tempdir();
    for build in [faults as fn(&Path, &str) -> PathBuf, disabled_group] {
        let mut seen: Vec<(&str, Ends)> = Vec::new();
        for mode in ["webhook", "mqtt", "https"] {
            let v = run_in(&build(dir.path(), mode), dir.path());
            seen.push((mode, ends(&v, mode)));
        }
        let (_, want) = &seen[0];
        for (mode, got) in &seen[1..] {
            assert_eq!(got, want, "{mode} differs from webhook mode");
        }
        // The rows that matter most, named.
        let want: BTreeMap<_, _> = want.iter().map(|(k, v)| (k.as_str(), v)).collect();
        if let Some((o, _)) = want.get("group-disabled") {
            assert_eq!(*o, vec!["disabled".to_owned()]);
        }
        if let Some((o, _)) = want.get("disabled") {
            assert_eq!(*o, vec!["disabled".to_owned()]);
        }
        if let Some((o, _)) = want.get("unknown") {
            assert_eq!(*o, vec!["failed:400207".to_owned()]);
        }
    }
}

/// Real DPS never calls the webhook for a disabled enrollment group.
#[test]
fn a_disabled_group_never_calls_the_webhook() {
    let dir = tempdir();
    let v = run_in(&disabled_group(dir.path(), "webhook"), dir.path());
    let c = crate::util::class(&v, "group-disabled");
    assert_eq!(c["outcomes"]["disabled"], 5, "{c}");
    // One webhook call: the enabled individual enrollment's.
    assert_eq!(v["requests"]["attempts"], 1, "{}", v["requests"]);
}
