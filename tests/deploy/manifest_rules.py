"""Offline checks of the Kubernetes manifests in deploy/kubernetes/.

kubectl cannot check a manifest without an API server: `--dry-run=client`
still asks the server for its resource list, and `--local` only parses YAML.
So these rules do what the API server's strict validation would for the
kinds we ship: each document's apiVersion and kind are known, every field is
one the kind has (a typo is an error, as with `kubectl apply
--validate=strict`), required fields are there with the right types, names
follow the API's name rules, and the objects refer to each other
consistently (service account, roles, volumes, the driver's name). It is a
schema for these kinds only, written from the Kubernetes API reference.

check_documents(docs) -> list of "file: kind/name: problem" strings.
"""

import re

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

# (apiVersion, kind) -> namespaced
KINDS = {
    ("v1", "Namespace"): False,
    ("v1", "ServiceAccount"): True,
    ("apps/v1", "DaemonSet"): True,
    ("storage.k8s.io/v1", "CSIDriver"): False,
    ("storage.k8s.io/v1", "StorageClass"): False,
    ("snapshot.storage.k8s.io/v1", "VolumeSnapshotClass"): False,
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): False,
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): False,
    ("rbac.authorization.k8s.io/v1", "Role"): True,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): True,
}

# Fields each object may have at the top level (besides apiVersion, kind, metadata).
TOP_FIELDS = {
    "Namespace": {"spec"},
    "ServiceAccount": {"automountServiceAccountToken", "imagePullSecrets", "secrets"},
    "DaemonSet": {"spec"},
    "CSIDriver": {"spec"},
    "StorageClass": {"provisioner", "parameters", "reclaimPolicy", "volumeBindingMode",
                     "allowVolumeExpansion", "mountOptions", "allowedTopologies"},
    "VolumeSnapshotClass": {"driver", "deletionPolicy", "parameters"},
    "ClusterRole": {"rules", "aggregationRule"},
    "ClusterRoleBinding": {"subjects", "roleRef"},
    "Role": {"rules"},
    "RoleBinding": {"subjects", "roleRef"},
}
METADATA_FIELDS = {"name", "namespace", "labels", "annotations"}

DAEMONSET_SPEC = {"selector", "template", "updateStrategy", "minReadySeconds",
                  "revisionHistoryLimit"}
POD_SPEC = {"serviceAccountName", "nodeSelector", "hostPID", "hostIPC", "hostNetwork",
            "terminationGracePeriodSeconds", "containers", "initContainers", "volumes",
            "tolerations", "priorityClassName", "affinity", "dnsPolicy", "securityContext"}
CONTAINER = {"name", "image", "command", "args", "env", "ports", "securityContext",
             "volumeMounts", "livenessProbe", "readinessProbe", "startupProbe", "resources",
             "imagePullPolicy", "workingDir"}
VOLUME_MOUNT = {"name", "mountPath", "readOnly", "mountPropagation", "subPath"}
MOUNT_PROPAGATION = {"None", "HostToContainer", "Bidirectional"}
PROBE = {"exec", "httpGet", "tcpSocket", "grpc", "initialDelaySeconds", "periodSeconds",
         "timeoutSeconds", "failureThreshold", "successThreshold"}
PORT = {"name", "containerPort", "protocol", "hostPort"}
ENV = {"name", "value", "valueFrom"}
VOLUME_SOURCES = {"hostPath", "emptyDir", "configMap", "secret", "projected"}
HOST_PATH_TYPES = {"", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket",
                   "CharDevice", "BlockDevice"}
CSIDRIVER_SPEC = {"attachRequired", "podInfoOnMount", "volumeLifecycleModes",
                  "storageCapacity", "fsGroupPolicy", "tokenRequests", "requiresRepublish",
                  "seLinuxMount"}
POLICY_RULE = {"apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"}
VERBS = {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}


class Checker:
    def __init__(self):
        self.problems = []

    def bad(self, where, text):
        self.problems.append(f"{where}: {text}")

    def fields(self, where, obj, allowed, required=()):
        if not isinstance(obj, dict):
            self.bad(where, f"expected a mapping, got {type(obj).__name__}")
            return False
        for key in obj:
            if key not in allowed:
                self.bad(where, f"unknown field {key!r}")
        for key in required:
            if key not in obj:
                self.bad(where, f"missing required field {key!r}")
        return True

    def typed(self, where, value, kind):
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.bad(where, f"expected {kind.__name__}, got {type(value).__name__}")
            return False
        return True


def _probe(c, where, probe, ports):
    if not c.fields(where, probe, PROBE):
        return
    handlers = [h for h in ("exec", "httpGet", "tcpSocket", "grpc") if h in probe]
    if len(handlers) != 1:
        c.bad(where, f"needs exactly one handler, has {handlers}")
    if "exec" in probe:
        c.fields(where + ".exec", probe["exec"], {"command"}, ["command"])
        cmd = probe["exec"].get("command", [])
        if not (isinstance(cmd, list) and cmd and all(isinstance(a, str) for a in cmd)):
            c.bad(where + ".exec.command", "expected a non-empty list of strings")
    if "httpGet" in probe:
        h = probe["httpGet"]
        c.fields(where + ".httpGet", h, {"path", "port", "scheme", "host", "httpHeaders"},
                 ["port"])
        port = h.get("port")
        if isinstance(port, str) and port not in ports:
            c.bad(where + ".httpGet.port", f"names no port of the container: {port!r}")
    for k in ("initialDelaySeconds", "periodSeconds", "timeoutSeconds", "failureThreshold"):
        if k in probe:
            c.typed(f"{where}.{k}", probe[k], int)


def _container(c, where, ct, volumes):
    if not c.fields(where, ct, CONTAINER, ["name", "image"]):
        return
    if not DNS_LABEL.match(str(ct.get("name", ""))):
        c.bad(where + ".name", f"not a DNS-1123 label: {ct.get('name')!r}")
    if not isinstance(ct.get("image"), str) or not ct.get("image"):
        c.bad(where + ".image", "expected a non-empty string")
    for k in ("command", "args"):
        if k in ct and not (isinstance(ct[k], list) and all(isinstance(a, str) for a in ct[k])):
            c.bad(f"{where}.{k}", "expected a list of strings (quote numbers and empty values)")
    ports = {}
    for i, p in enumerate(ct.get("ports", [])):
        pw = f"{where}.ports[{i}]"
        if c.fields(pw, p, PORT, ["containerPort"]):
            c.typed(pw + ".containerPort", p.get("containerPort"), int)
            if "name" in p:
                ports[p["name"]] = p
    for i, e in enumerate(ct.get("env", [])):
        ew = f"{where}.env[{i}]"
        if c.fields(ew, e, ENV, ["name"]) and ("value" in e) == ("valueFrom" in e):
            c.bad(ew, "needs exactly one of value and valueFrom")
    for i, m in enumerate(ct.get("volumeMounts", [])):
        mw = f"{where}.volumeMounts[{i}]"
        if not c.fields(mw, m, VOLUME_MOUNT, ["name", "mountPath"]):
            continue
        if m["name"] not in volumes:
            c.bad(mw, f"mounts volume {m['name']!r}, which the pod does not declare")
        if "mountPropagation" in m and m["mountPropagation"] not in MOUNT_PROPAGATION:
            c.bad(mw + ".mountPropagation", f"not one of {sorted(MOUNT_PROPAGATION)}")
        if m.get("mountPropagation") == "Bidirectional" and not ct.get(
                "securityContext", {}).get("privileged"):
            c.bad(mw, "Bidirectional mount propagation needs a privileged container")
    for k in ("livenessProbe", "readinessProbe", "startupProbe"):
        if k in ct:
            _probe(c, f"{where}.{k}", ct[k], ports)


def _daemonset(c, where, obj):
    spec = obj.get("spec")
    if not c.fields(where + ".spec", spec, DAEMONSET_SPEC, ["selector", "template"]):
        return
    labels = spec["template"].get("metadata", {}).get("labels", {})
    for k, v in spec["selector"].get("matchLabels", {}).items():
        if labels.get(k) != v:
            c.bad(where + ".spec.selector", f"matchLabels {k}={v} does not select the template")
    pod = spec["template"].get("spec")
    if not c.fields(where + ".spec.template.spec", pod, POD_SPEC, ["containers"]):
        return
    volumes = {}
    for i, v in enumerate(pod.get("volumes", [])):
        vw = f"{where}.volumes[{i}]"
        if not isinstance(v, dict) or "name" not in v:
            c.bad(vw, "a volume needs a name")
            continue
        if v["name"] in volumes:
            c.bad(vw, f"volume {v['name']!r} declared twice")
        volumes[v["name"]] = v
        sources = [k for k in v if k != "name"]
        if len(sources) != 1 or sources[0] not in VOLUME_SOURCES:
            c.bad(vw, f"needs exactly one known source, has {sources}")
        hp = v.get("hostPath")
        if hp is not None and c.fields(vw + ".hostPath", hp, {"path", "type"}, ["path"]):
            if hp.get("type", "") not in HOST_PATH_TYPES:
                c.bad(vw + ".hostPath.type", f"unknown type {hp['type']!r}")
    names = set()
    for i, ct in enumerate(pod.get("containers", [])):
        _container(c, f"{where}.containers[{i}]", ct, volumes)
        if isinstance(ct, dict):
            if ct.get("name") in names:
                c.bad(f"{where}.containers[{i}]", f"container name {ct.get('name')!r} twice")
            names.add(ct.get("name"))


def _rules(c, where, rules):
    for i, r in enumerate(rules or []):
        rw = f"{where}.rules[{i}]"
        if not c.fields(rw, r, POLICY_RULE, ["verbs"]):
            continue
        for v in r.get("verbs", []):
            if v not in VERBS and v != "*":
                c.bad(rw, f"unknown verb {v!r}")
        if "resources" in r and "apiGroups" not in r:
            c.bad(rw, "resources without apiGroups")


def check_documents(docs):
    """docs: list of (file name, parsed document). Returns the problems."""
    c = Checker()
    objects = []
    for fname, doc in docs:
        if doc is None:
            continue  # an empty document between separators
        where = fname
        if not isinstance(doc, dict):
            c.bad(where, "a document must be a mapping")
            continue
        api, kind = doc.get("apiVersion"), doc.get("kind")
        if (api, kind) not in KINDS:
            c.bad(where, f"unknown apiVersion/kind {api}/{kind}")
            continue
        meta = doc.get("metadata", {})
        name = meta.get("name", "") if isinstance(meta, dict) else ""
        where = f"{fname}: {kind}/{name}"
        c.fields(where, {k: v for k, v in doc.items() if k not in ("apiVersion", "kind")},
                 TOP_FIELDS[kind] | {"metadata"}, ["metadata"])
        c.fields(where + ".metadata", meta, METADATA_FIELDS, ["name"])
        if not DNS_SUBDOMAIN.match(name) or len(name) > 253:
            c.bad(where, f"name {name!r} is not a DNS-1123 subdomain")
        namespaced = KINDS[(api, kind)]
        if namespaced and "namespace" not in meta:
            c.bad(where, "a namespaced object without metadata.namespace")
        if not namespaced and "namespace" in meta:
            c.bad(where, "a cluster-scoped object with a namespace")
        objects.append((where, doc))

    def find(kind, name, namespace=None):
        return [d for _, d in objects if d["kind"] == kind and d["metadata"]["name"] == name
                and (namespace is None or d["metadata"].get("namespace") == namespace)]

    drivers = set()
    for where, doc in objects:
        kind = doc["kind"]
        ns = doc["metadata"].get("namespace")
        if ns and not find("Namespace", ns):
            c.bad(where, f"namespace {ns!r} is not among the manifests")
        if kind == "DaemonSet":
            _daemonset(c, where, doc)
            sa = doc["spec"]["template"]["spec"].get("serviceAccountName")
            if sa and not find("ServiceAccount", sa, ns):
                c.bad(where, f"service account {sa!r} is not among the manifests")
        elif kind == "CSIDriver":
            spec = doc.get("spec", {})
            c.fields(where + ".spec", spec, CSIDRIVER_SPEC)
            drivers.add(doc["metadata"]["name"])
            # What stepsnap-csi needs: no attach, the pod's identity at publish.
            if spec.get("attachRequired") is not False:
                c.bad(where, "attachRequired must be false (a node-local pool attaches nothing)")
            if spec.get("podInfoOnMount") is not True:
                c.bad(where, "podInfoOnMount must be true (pod steps need the pod's uid)")
        elif kind == "StorageClass":
            if doc.get("volumeBindingMode") != "WaitForFirstConsumer":
                c.bad(where, "volumeBindingMode must be WaitForFirstConsumer (node-local volumes)")
            if doc.get("reclaimPolicy", "Delete") not in ("Delete", "Retain"):
                c.bad(where, "reclaimPolicy must be Delete or Retain")
        elif kind == "VolumeSnapshotClass":
            if doc.get("deletionPolicy") not in ("Delete", "Retain"):
                c.bad(where, "deletionPolicy must be Delete or Retain")
        elif kind in ("ClusterRole", "Role"):
            _rules(c, where, doc.get("rules"))
        elif kind in ("ClusterRoleBinding", "RoleBinding"):
            ref = doc.get("roleRef", {})
            if c.fields(where + ".roleRef", ref, {"apiGroup", "kind", "name"},
                        ["apiGroup", "kind", "name"]):
                if not find(ref["kind"], ref["name"], ns if ref["kind"] == "Role" else None):
                    c.bad(where, f"roleRef {ref['kind']}/{ref['name']} is not among the manifests")
            for i, s in enumerate(doc.get("subjects", [])):
                sw = f"{where}.subjects[{i}]"
                if c.fields(sw, s, {"kind", "name", "namespace", "apiGroup"}, ["kind", "name"]):
                    if s["kind"] == "ServiceAccount" and not find("ServiceAccount", s["name"],
                                                                  s.get("namespace")):
                        c.bad(sw, f"service account {s['name']!r} is not among the manifests")
    # One driver name everywhere it is spelled.
    for where, doc in objects:
        named = doc.get("provisioner") or doc.get("driver")
        if doc["kind"] in ("StorageClass", "VolumeSnapshotClass") and named not in drivers:
            c.bad(where, f"driver {named!r} is no CSIDriver of the manifests")
    return c.problems
