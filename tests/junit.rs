//! JUnit XML checks: the structure CI systems read (Jenkins/Ant `testsuites` > `testsuite` >
//! `testcase` > `failure`), and, when `LOADTEST_JUNIT_XSD` names a Python with `xmlschema`
//! (set by `.ci/run`), validation against the schema in `tests/data/junit.xsd`.

use std::path::Path;

pub fn assert_valid(path: &Path, failures: usize) {
    let text = std::fs::read_to_string(path).expect("junit written");
    let doc = roxmltree::Document::parse(&text).expect("well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    let num = |n: roxmltree::Node<'_, '_>, a: &str| -> f64 {
        n.attribute(a)
            .unwrap_or_else(|| panic!("<{}> lacks {a}", n.tag_name().name()))
            .parse()
            .unwrap_or_else(|_| panic!("<{}> {a} is not a number", n.tag_name().name()))
    };
    let suites: Vec<_> = root.children().filter(|n| n.is_element()).collect();
    assert_eq!(suites.len(), 1, "one testsuite per scenario");
    let suite = suites[0];
    assert_eq!(suite.tag_name().name(), "testsuite");
    assert!(suite.attribute("name").is_some_and(|n| !n.is_empty()));
    num(suite, "time");
    let cases: Vec<_> = suite
        .children()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    let failed = cases
        .iter()
        .filter(|c| c.children().any(|f| f.has_tag_name("failure")))
        .count();
    assert_eq!(failed, failures, "{text}");
    for (node, attr) in [(root, "tests"), (suite, "tests")] {
        assert_eq!(num(node, attr) as usize, cases.len());
    }
    for node in [root, suite] {
        assert_eq!(num(node, "failures") as usize, failures);
        assert_eq!(num(node, "errors"), 0.0);
    }
    for c in &cases {
        for a in ["name", "classname"] {
            assert!(
                c.attribute(a).is_some_and(|v| !v.is_empty()),
                "testcase lacks {a}"
            );
        }
        num(*c, "time");
        for f in c.children().filter(|f| f.has_tag_name("failure")) {
            assert!(f.attribute("message").is_some_and(|m| !m.is_empty()));
            assert!(f.attribute("type").is_some());
        }
    }
    if let Ok(python) = std::env::var("LOADTEST_JUNIT_XSD") {
        let xsd = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/junit.xsd");
        let out = std::process::Command::new(python)
            .args([
                "-c",
                "import sys, xmlschema; xmlschema.XMLSchema(sys.argv[1]).validate(sys.argv[2])",
            ])
            .arg(&xsd)
            .arg(path)
            .output()
            .expect("python runs");
        assert!(
            out.status.success(),
            "{} violates {}: {}",
            path.display(),
            xsd.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
