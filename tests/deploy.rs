//! The deployment examples under `deploy/` are well-formed and consistent: the YAML
//! parses, the rotagate config each embeds passes `rotagate check` (with the
//! environment each container gets, overrides included), and the probes, ports and
//! mounts point where that config listens.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_yaml_ng::Value;

fn docs(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| {
            let mut v = <Value as serde::Deserialize>::deserialize(d)
                .unwrap_or_else(|e| panic!("{path}: not YAML: {e}"));
            v.apply_merge().unwrap();
            v
        })
        .collect()
}

fn s<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    let mut v = v;
    for k in path {
        v = match k.parse::<usize>() {
            Ok(i) => &v[i],
            Err(_) => &v[*k],
        };
        assert!(!v.is_null(), "missing {path:?}");
    }
    v
}

/// `rotagate check` on `config` with `env` (values from the manifest; secrets a
/// manifest only names get a test value).
fn check(config: &str, env: &BTreeMap<String, String>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("rotagate.toml");
    std::fs::write(&p, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rotagate"))
        .args(["check", "-c"])
        .arg(&p)
        .env_clear()
        .envs(env)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "embedded config fails check: {text}\n{config}"
    );
    text
}

const SECRET: &str = "a-test-secret-value-with-32-bytes-or-more-0123456789";

#[test]
fn kubernetes_sidecar_example() {
    let dir = Path::new("deploy/kubernetes");
    let kust = docs("deploy/kubernetes/kustomization.yaml");
    let resources: Vec<String> = s(&kust[0], &["resources"])
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let mut by_kind: BTreeMap<String, Value> = BTreeMap::new();
    for r in &resources {
        for d in docs(&dir.join(r).display().to_string()) {
            by_kind.insert(s(&d, &["kind"]).as_str().unwrap().to_string(), d);
        }
    }
    for kind in ["ConfigMap", "Deployment", "Service"] {
        assert!(
            by_kind.contains_key(kind),
            "{kind} missing from {resources:?}"
        );
    }
    let cm = &by_kind["ConfigMap"];
    let config = s(cm, &["data", "rotagate.toml"]).as_str().unwrap();
    let cfg: toml::Table = toml::from_str(config).unwrap();

    let dep = &by_kind["Deployment"];
    let pod = s(dep, &["spec", "template", "spec"]);
    let rg = pod["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "rotagate")
        .expect("a rotagate container");
    // the environment it gets: literal values, secrets from secretKeyRef as test values
    let mut env = BTreeMap::new();
    for e in rg["env"].as_sequence().unwrap() {
        let name = e["name"].as_str().unwrap().to_string();
        let value = e["value"]
            .as_str()
            .map_or(SECRET.to_string(), str::to_string);
        env.insert(name, value);
    }
    assert!(env.keys().any(|k| k.contains("__")), "shows an override");
    let out = check(config, &env);
    assert!(out.contains("ok ("), "{out}");

    // ports and probes point at the config's listeners
    let port_of = |addr: &str| addr.rsplit(':').next().unwrap().parse::<i64>().unwrap();
    let ports: BTreeMap<String, i64> = rg["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["containerPort"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ports["http"],
        port_of(cfg["listen"]["address"].as_str().unwrap())
    );
    let admin = cfg["admin"]["address"].as_str().unwrap();
    assert!(
        admin.starts_with("0.0.0.0:"),
        "kubelet probes reach the pod IP: {admin}"
    );
    assert_eq!(ports["admin"], port_of(admin));
    assert_eq!(
        s(rg, &["livenessProbe", "httpGet", "path"]).as_str(),
        Some("/healthz")
    );
    assert_eq!(
        s(rg, &["readinessProbe", "httpGet", "path"]).as_str(),
        Some("/readyz")
    );
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(s(rg, &[probe, "httpGet", "port"]).as_str(), Some("admin"));
    }
    // the config is mounted from that ConfigMap where args say
    let args: Vec<&str> = rg["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let cfg_path = args[args.iter().position(|a| *a == "-c").unwrap() + 1];
    let mount = rg["volumeMounts"].as_sequence().unwrap()[0].clone();
    assert!(cfg_path.starts_with(mount["mountPath"].as_str().unwrap()));
    let vol = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(vol["configMap"]["name"], cm["metadata"]["name"]);
    // the upstream is the app container's port in the same pod
    let up = cfg["upstream"]["url"].as_str().unwrap();
    assert!(up.starts_with("http://127.0.0.1:"), "{up}");
    // the Service sends traffic to rotagate, not the app nor the admin port
    let svc = &by_kind["Service"];
    assert_eq!(
        s(svc, &["spec", "ports", "0", "targetPort"]).as_str(),
        Some("http")
    );
    assert_eq!(
        s(svc, &["spec", "selector"]),
        s(dep, &["spec", "selector", "matchLabels"])
    );
}

#[test]
fn compose_example() {
    let d = docs("deploy/compose.yaml");
    let doc = &d[0];
    let services = s(doc, &["services"]).as_mapping().unwrap();
    let mut checked = 0;
    for (name, svc) in services {
        let name = name.as_str().unwrap();
        let Some(configs) = svc["configs"].as_sequence() else {
            continue;
        };
        let source = configs[0]["source"].as_str().unwrap();
        assert_eq!(
            configs[0]["target"].as_str(),
            Some("/etc/rotagate/rotagate.toml")
        );
        let command: Vec<&str> = svc["command"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(
            command,
            ["run", "-c", "/etc/rotagate/rotagate.toml"],
            "{name}"
        );
        let config = s(doc, &["configs", source, "content"]).as_str().unwrap();
        let mut env = BTreeMap::new();
        for (k, v) in svc["environment"].as_mapping().unwrap() {
            let v = v.as_str().unwrap();
            // ${VAR} from the operator's shell: a test value
            let v = if v.starts_with("${") { SECRET } else { v };
            env.insert(k.as_str().unwrap().to_string(), v.to_string());
        }
        let out = check(config, &env);
        assert!(out.contains("ok ("), "{name}: {out}");
        // the published port is the config's listen port; the upstream is the app service
        let cfg: toml::Table = toml::from_str(config).unwrap();
        let listen = cfg["listen"]["address"].as_str().unwrap();
        let published = svc["ports"][0].as_str().unwrap();
        assert!(
            published.ends_with(&format!(":{}", listen.rsplit(':').next().unwrap())),
            "{name}"
        );
        assert_eq!(
            env.get("ROTAGATE_UPSTREAM__URL").map(String::as_str),
            Some("http://app:3000"),
            "{name}"
        );
        checked += 1;
    }
    assert_eq!(checked, 3, "rotagate, rotagate-a and rotagate-b");
    // the replicas share one Redis store
    let vault: toml::Table = toml::from_str(
        s(doc, &["configs", "rotagate-vault", "content"])
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert!(vault["session"]["store"]
        .as_str()
        .unwrap()
        .starts_with("redis://redis:"));
    assert!(services.contains_key("redis"));
}
