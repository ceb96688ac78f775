"""Every manifest in deploy/kubernetes/ parses and passes the offline rules
(manifest_rules.py); and the rules do catch what they claim to, on broken
copies of the real manifests."""

import copy
import glob
import os
import unittest

import yaml

from manifest_rules import check_documents

DEPLOY = os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "kubernetes")


def load_all():
    docs = []
    files = sorted(glob.glob(os.path.join(DEPLOY, "*.yaml")))
    for path in files:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                docs.append((os.path.basename(path), doc))
    return files, docs


def first(docs, kind):
    for i, (_, d) in enumerate(docs):
        if isinstance(d, dict) and d.get("kind") == kind:
            return i, d
    raise AssertionError(f"no {kind} among the manifests")


class Manifests(unittest.TestCase):
    def setUp(self):
        self.files, self.docs = load_all()

    def test_every_manifest_passes(self):
        names = {os.path.basename(f) for f in self.files}
        for expected in ("csidriver.yaml", "daemonset.yaml", "storageclass.yaml",
                         "volumesnapshotclass.yaml", "rbac.yaml"):
            self.assertIn(expected, names)
        self.assertEqual(check_documents(self.docs), [])

    def test_the_node_pod_has_its_containers_and_probes(self):
        _, ds = first(self.docs, "DaemonSet")
        containers = {c["name"]: c for c in ds["spec"]["template"]["spec"]["containers"]}
        for name in ("stepsnapd", "stepsnap-csi", "node-driver-registrar", "liveness-probe",
                     "csi-provisioner", "csi-snapshotter"):
            self.assertIn(name, containers)
        for name in ("stepsnapd", "stepsnap-csi", "node-driver-registrar"):
            self.assertIn("livenessProbe", containers[name], name)
        for name in ("csi-provisioner", "csi-snapshotter"):
            self.assertIn("--node-deployment=true", containers[name]["args"], name)

    def test_step_pods_can_be_read_and_registered(self):
        # stepsnap-csi reads a published pod, its claims and their PVs; the
        # node's service account must be allowed get on all three, and the
        # pods' cgroups must be where stepsnapd and stepsnap-csi look.
        _, ds = first(self.docs, "DaemonSet")
        account = ds["spec"]["template"]["spec"]["serviceAccountName"]
        roles = {d["metadata"]["name"]: d for _, d in self.docs
                 if isinstance(d, dict) and d.get("kind") == "ClusterRole"}
        granted = set()
        for _, d in self.docs:
            if not isinstance(d, dict) or d.get("kind") != "ClusterRoleBinding":
                continue
            if not any(s.get("kind") == "ServiceAccount" and s.get("name") == account
                       for s in d.get("subjects", [])):
                continue
            for rule in roles[d["roleRef"]["name"]]["rules"]:
                if "" in rule.get("apiGroups", []) and "get" in rule.get("verbs", []):
                    granted.update(rule.get("resources", []))
        for resource in ("pods", "persistentvolumeclaims", "persistentvolumes"):
            self.assertIn(resource, granted)
        containers = {c["name"]: c for c in ds["spec"]["template"]["spec"]["containers"]}
        self.assertIn("--step-cgroup-root=/sys/fs/cgroup/kubepods.slice",
                      containers["stepsnapd"]["args"])
        self.assertIn("--cgroup-driver=systemd", containers["stepsnap-csi"]["args"])
        self.assertIn("--kubepods-parent=/sys/fs/cgroup", containers["stepsnap-csi"]["args"])

    def broken(self, mutate):
        docs = copy.deepcopy(self.docs)
        mutate(docs)
        return check_documents(docs)

    def test_a_misspelt_field_is_caught(self):
        def typo(docs):
            _, ds = first(docs, "DaemonSet")
            ds["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
        self.assertTrue(any("unknown field 'volumeMount'" in p for p in self.broken(typo)))

    def test_a_mount_of_an_undeclared_volume_is_caught(self):
        def drop(docs):
            _, ds = first(docs, "DaemonSet")
            vols = ds["spec"]["template"]["spec"]["volumes"]
            vols[:] = [v for v in vols if v["name"] != "plugin-dir"]
        self.assertTrue(any("'plugin-dir', which the pod does not declare" in p
                            for p in self.broken(drop)))

    def test_a_missing_service_account_is_caught(self):
        def drop(docs):
            i, _ = first(docs, "ServiceAccount")
            del docs[i]
        problems = self.broken(drop)
        self.assertTrue(any("service account 'stepsnap-node'" in p for p in problems), problems)

    def test_a_role_binding_to_nothing_is_caught(self):
        def rename(docs):
            _, b = first(docs, "ClusterRoleBinding")
            b["roleRef"]["name"] = "no-such-role"
        self.assertTrue(any("roleRef ClusterRole/no-such-role" in p for p in self.broken(rename)))

    def test_driver_settings_the_driver_needs_are_enforced(self):
        def attach(docs):
            _, d = first(docs, "CSIDriver")
            d["spec"]["attachRequired"] = True
            d["spec"]["podInfoOnMount"] = False
        problems = self.broken(attach)
        self.assertTrue(any("attachRequired must be false" in p for p in problems))
        self.assertTrue(any("podInfoOnMount must be true" in p for p in problems))

        def immediate(docs):
            _, s = first(docs, "StorageClass")
            s["volumeBindingMode"] = "Immediate"
            s["provisioner"] = "other.csi"
        problems = self.broken(immediate)
        self.assertTrue(any("WaitForFirstConsumer" in p for p in problems))
        self.assertTrue(any("driver 'other.csi' is no CSIDriver" in p for p in problems))

    def test_an_unquoted_number_in_args_and_a_bad_verb_are_caught(self):
        def number(docs):
            _, ds = first(docs, "DaemonSet")
            ds["spec"]["template"]["spec"]["containers"][0]["args"].append(64)
            _, r = first(docs, "ClusterRole")
            r["rules"][0]["verbs"].append("read")
        problems = self.broken(number)
        self.assertTrue(any("expected a list of strings" in p for p in problems))
        self.assertTrue(any("unknown verb 'read'" in p for p in problems))


if __name__ == "__main__":
    unittest.main()
