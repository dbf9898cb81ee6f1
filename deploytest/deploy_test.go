package deploytest

// The Kubernetes manifests against the configuration and the admin API, the
// alerting rules and the Grafana dashboard against the metrics a running
// sluice exports, the PrometheusRule against the plain rule file, and the
// runbook against the alerts.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/sluice-dev/sluice/fleet"
	"github.com/sluice-dev/sluice/internal/pipenet"
	"github.com/sluice-dev/sluice/sidecar"
	"github.com/sluice-dev/sluice/sidecar/classify"
	"github.com/sluice-dev/sluice/sidecar/proxy"
	"github.com/sluice-dev/sluice/state"
)

const (
	deployKubeDir   = "../deploy/kubernetes"
	deployRulesFile = "../deploy/prometheus/sluice-rules.yml"
	deployRuleTests = "../deploy/prometheus/sluice-rules.test.yml"
	deployPromRule  = "../deploy/kubernetes/base/prometheusrule.yaml"
	deployDashboard = "../deploy/grafana/sluice-dashboard.json"
	deployRunbook   = "../docs/runbook.md"
)

// k8sObject is the part of a Kubernetes object the checks read.
type k8sObject struct {
	file       string
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Spec yaml.Node `yaml:"spec"`
}

type podTemplate struct {
	Metadata struct {
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Spec podSpec `yaml:"spec"`
}

type podSpec struct {
	RestartPolicy string `yaml:"restartPolicy"`
	// TerminationGracePeriodSeconds is nil when the manifest leaves
	// Kubernetes' default.
	TerminationGracePeriodSeconds *int           `yaml:"terminationGracePeriodSeconds"`
	InitContainers                []k8sContainer `yaml:"initContainers"`
	Containers                    []k8sContainer `yaml:"containers"`
	Volumes                       []struct {
		Name     string     `yaml:"name"`
		EmptyDir *yaml.Node `yaml:"emptyDir"`
	} `yaml:"volumes"`
}

type k8sContainer struct {
	Name          string   `yaml:"name"`
	Image         string   `yaml:"image"`
	RestartPolicy string   `yaml:"restartPolicy"`
	Command       []string `yaml:"command"`
	Args          []string `yaml:"args"`
	Env           []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef *struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
			FieldRef *struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	StartupProbe   *k8sProbe `yaml:"startupProbe"`
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext *struct {
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

type k8sProbe struct {
	HTTPGet *struct {
		Path string    `yaml:"path"`
		Port yaml.Node `yaml:"port"`
	} `yaml:"httpGet"`
}

// env returns the value of the container's variable name, if set by value.
func (c *k8sContainer) env(name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

// envSource says where the container's variable name gets its value: the
// value itself, or the pod field it is read from. Two variables with the
// same source hold the same value in the running pod. "" if not set.
func (c *k8sContainer) envSource(name string) string {
	for _, e := range c.Env {
		switch {
		case e.Name != name:
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil:
			return "field " + e.ValueFrom.FieldRef.FieldPath
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			return "secret " + e.ValueFrom.SecretKeyRef.Name + "/" + e.ValueFrom.SecretKeyRef.Key
		default:
			return "value " + e.Value
		}
	}
	return ""
}

// portNumber resolves a probe port, a number or the name of a container port.
func (c *k8sContainer) portNumber(port yaml.Node) (int, bool) {
	if n, err := strconv.Atoi(port.Value); err == nil {
		return n, true
	}
	for _, p := range c.Ports {
		if p.Name == port.Value {
			return p.ContainerPort, true
		}
	}
	return 0, false
}

// loadManifests parses every YAML document under deploy/kubernetes,
// kustomizations included.
func loadManifests(t *testing.T) []k8sObject {
	t.Helper()
	var objs []k8sObject
	err := filepath.WalkDir(deployKubeDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || (filepath.Ext(path) != ".yaml" && filepath.Ext(path) != ".yml") {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		dec := yaml.NewDecoder(f)
		for {
			var o k8sObject
			if err := dec.Decode(&o); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			if o.Kind == "" {
				t.Fatalf("%s: a document without kind", path)
			}
			o.file = path
			objs = append(objs, o)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// podTemplateOf returns the pod template of a workload; false for other kinds.
func podTemplateOf(t *testing.T, o k8sObject) (podTemplate, bool) {
	t.Helper()
	var pt podTemplate
	switch o.Kind {
	case "Pod":
		var spec podSpec
		if err := o.Spec.Decode(&spec); err != nil {
			t.Fatalf("%s: %s %s: %v", o.file, o.Kind, o.Metadata.Name, err)
		}
		pt.Metadata.Labels, pt.Spec = o.Metadata.Labels, spec
		return pt, true
	case "Job", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet":
		var spec struct {
			Template podTemplate `yaml:"template"`
		}
		if err := o.Spec.Decode(&spec); err != nil {
			t.Fatalf("%s: %s %s: %v", o.file, o.Kind, o.Metadata.Name, err)
		}
		return spec.Template, true
	case "CronJob":
		var spec struct {
			JobTemplate struct {
				Spec struct {
					Template podTemplate `yaml:"template"`
				} `yaml:"spec"`
			} `yaml:"jobTemplate"`
		}
		if err := o.Spec.Decode(&spec); err != nil {
			t.Fatalf("%s: %s %s: %v", o.file, o.Kind, o.Metadata.Name, err)
		}
		return spec.JobTemplate.Spec.Template, true
	}
	return podTemplate{}, false
}

// defaultConfig is the configuration of an environment that sets only what
// has no default (the upstream URL): every other field is its default.
func defaultConfig(t *testing.T) sidecar.Config {
	t.Helper()
	cfg, _, err := sidecar.LoadConfig([]string{sidecar.EnvPrefix + "UPSTREAM_URL=http://store.test"})
	if err != nil {
		t.Fatalf("default configuration: %v", err)
	}
	return cfg
}

// configVariables is the set of every SLUICE_* variable sluice reads:
// Effective lists each one, whatever its value.
func configVariables(t *testing.T) map[string]bool {
	t.Helper()
	known := map[string]bool{}
	for _, kv := range defaultConfig(t).Effective() {
		known[kv[0]] = true
	}
	if !known[sidecar.EnvPrefix+"ADMIN_ADDR"] {
		t.Fatalf("Config.Effective does not list %sADMIN_ADDR: is it still every variable?", sidecar.EnvPrefix)
	}
	return known
}

// checkGracePeriod checks that the pod lets sluice finish a shutdown:
// its termination grace period (Kubernetes' default is 30 s) exceeds
// sidecar.ShutdownBound for the container's SLUICE_SHUTDOWN_TIMEOUT.
func checkGracePeriod(t *testing.T, where string, pt podTemplate, c k8sContainer) {
	t.Helper()
	env := []string{sidecar.EnvPrefix + "UPSTREAM_URL=http://store.test"}
	if v, ok := c.env(sidecar.EnvPrefix + "SHUTDOWN_TIMEOUT"); ok {
		env = append(env, sidecar.EnvPrefix+"SHUTDOWN_TIMEOUT="+v)
	}
	cfg, _, err := sidecar.LoadConfig(env) // read as sluice reads it
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	grace := 30 * time.Second
	if g := pt.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	if bound := sidecar.ShutdownBound(cfg); grace <= bound {
		t.Errorf("%s: terminationGracePeriodSeconds is %v, but a shutdown with SLUICE_SHUTDOWN_TIMEOUT %v may take %v: the kubelet would kill sluice before it ends", where, grace, cfg.ShutdownTimeout, bound)
	}
}

// defaultAdminPort is the port of SLUICE_ADMIN_ADDR's default.
func defaultAdminPort(t *testing.T) int {
	t.Helper()
	addr := defaultConfig(t).AdminAddr
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("SLUICE_ADMIN_ADDR default %q: %v", addr, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatalf("SLUICE_ADMIN_ADDR default %q: %v", addr, err)
	}
	return n
}

// TestDeployManifestsMatchConfig parses every manifest and checks the pods
// that run sluice against the code: every SLUICE_* variable exists, probes
// hit /healthz and /readyz on the admin port, the native sidecar really is
// one (initContainers, restartPolicy Always), the legacy variant stops sluice
// with /quitquitquit, and the container is locked down.
func TestDeployManifestsMatchConfig(t *testing.T) {
	known := configVariables(t)
	adminPort := defaultAdminPort(t)
	objs := loadManifests(t)

	secrets := map[string]bool{}
	for _, o := range objs {
		if o.Kind == "Secret" {
			secrets[o.Metadata.Name] = true
		}
	}
	// Secrets whose value must be the user's own, like the admin token,
	// are created by the user as docs/deploy.md says, not shipped here.
	deployDoc, err := os.ReadFile("../docs/deploy.md")
	if err != nil {
		t.Fatal(err)
	}
	userSecrets := map[string]bool{}
	for _, m := range regexp.MustCompile(`kubectl create secret generic ([a-z0-9.-]+)`).FindAllSubmatch(deployDoc, -1) {
		userSecrets[string(m[1])] = true
	}
	var podMonitors []k8sObject
	for _, o := range objs {
		if o.Kind == "PodMonitor" {
			podMonitors = append(podMonitors, o)
		}
	}
	if len(podMonitors) == 0 {
		t.Errorf("no PodMonitor under %s", deployKubeDir)
	}

	var native, legacy int
	for _, o := range objs {
		pt, ok := podTemplateOf(t, o)
		if !ok {
			continue
		}
		where := o.file + ": " + o.Kind + " " + o.Metadata.Name
		all := slices.Concat(pt.Spec.InitContainers, pt.Spec.Containers)
		for _, c := range all {
			for _, e := range c.Env {
				if strings.HasPrefix(e.Name, sidecar.EnvPrefix) && !known[e.Name] {
					t.Errorf("%s: container %s sets %s, which is not a configuration variable", where, c.Name, e.Name)
				}
				if ref := e.ValueFrom; ref != nil && ref.SecretKeyRef != nil && !secrets[ref.SecretKeyRef.Name] && !userSecrets[ref.SecretKeyRef.Name] {
					t.Errorf("%s: container %s reads %s from Secret %q, which no manifest defines and docs/deploy.md does not create", where, c.Name, e.Name, ref.SecretKeyRef.Name)
				}
				if e.Name == sidecar.EnvPrefix+"ADMIN_TOKEN" && (e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || secrets[e.ValueFrom.SecretKeyRef.Name]) {
					t.Errorf("%s: container %s takes %s from the repository, where anyone can read it; take it from a Secret the user creates", where, c.Name, e.Name)
				}
			}
		}

		idx := slices.IndexFunc(pt.Spec.InitContainers, func(c k8sContainer) bool { return c.Name == "sluice" })
		var sc k8sContainer
		switch {
		case idx >= 0:
			native++
			sc = pt.Spec.InitContainers[idx]
			if sc.RestartPolicy != "Always" {
				t.Errorf("%s: init container sluice has restartPolicy %q, want Always (a native sidecar)", where, sc.RestartPolicy)
			}
			if len(pt.Spec.Containers) == 0 {
				t.Errorf("%s: no main container beside the sidecar", where)
			}
		default:
			idx = slices.IndexFunc(pt.Spec.Containers, func(c k8sContainer) bool { return c.Name == "sluice" })
			if idx < 0 {
				continue // not a sluice pod
			}
			legacy++
			sc = pt.Spec.Containers[idx]
			quits := false
			for i, c := range pt.Spec.Containers {
				if i != idx && strings.Contains(strings.Join(slices.Concat(c.Command, c.Args), " "), "/quitquitquit") {
					quits = true
				}
			}
			if !quits {
				t.Errorf("%s: sluice is a plain container but no other container calls POST /quitquitquit", where)
			}
		}
		checkSluiceContainer(t, where, pt, sc, adminPort)
		checkDefaultJobNotCompleted(t, where, pt, sc)
		for _, pm := range podMonitors {
			checkPodMonitor(t, pm, where, pt, sc)
		}
	}
	if native == 0 {
		t.Errorf("no workload runs sluice as a native sidecar (initContainers entry named sluice)")
	}
	if legacy == 0 {
		t.Errorf("no workload runs sluice as a plain container (the variant for clusters without native sidecars)")
	}
}

// mounts reports whether path lies in one of c's volume mounts.
func (c k8sContainer) mounts(path string) bool {
	for _, m := range c.VolumeMounts {
		if strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/") {
			return true
		}
	}
	return false
}

func checkSluiceContainer(t *testing.T, where string, pt podTemplate, c k8sContainer, adminPort int) {
	t.Helper()
	checkGracePeriod(t, where, pt, c)
	if addr, ok := c.env(sidecar.EnvPrefix + "ADMIN_ADDR"); ok {
		_, port, err := net.SplitHostPort(addr)
		n, perr := strconv.Atoi(port)
		if err != nil || perr != nil {
			t.Fatalf("%s: SLUICE_ADMIN_ADDR %q has no port", where, addr)
		}
		adminPort = n
	}
	if c.Image == "" {
		t.Errorf("%s: sluice has no image", where)
	}
	hasAdmin := false
	for _, p := range c.Ports {
		if p.Name == "admin" {
			hasAdmin = true
			if p.ContainerPort != adminPort {
				t.Errorf("%s: port admin is %d, sluice's admin API listens on %d", where, p.ContainerPort, adminPort)
			}
		}
	}
	if !hasAdmin {
		t.Errorf("%s: sluice declares no container port named admin (the PodMonitor scrapes it)", where)
	}
	for _, p := range []struct {
		kind  string
		probe *k8sProbe
		paths []string
	}{
		{"startupProbe", c.StartupProbe, []string{"/readyz", "/healthz"}},
		{"readinessProbe", c.ReadinessProbe, []string{"/readyz"}},
		{"livenessProbe", c.LivenessProbe, []string{"/healthz"}},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s: sluice has no HTTP %s", where, p.kind)
			continue
		}
		if !slices.Contains(p.paths, p.probe.HTTPGet.Path) {
			t.Errorf("%s: %s path %q, want one of %v", where, p.kind, p.probe.HTTPGet.Path, p.paths)
		}
		if port, ok := c.portNumber(p.probe.HTTPGet.Port); !ok || port != adminPort {
			t.Errorf("%s: %s port %q is %d, want the admin port %d", where, p.kind, p.probe.HTTPGet.Port.Value, port, adminPort)
		}
	}
	sec := c.SecurityContext
	switch {
	case sec == nil:
		t.Errorf("%s: sluice has no securityContext", where)
	default:
		if sec.RunAsNonRoot == nil || !*sec.RunAsNonRoot {
			t.Errorf("%s: sluice does not set runAsNonRoot: true", where)
		}
		if sec.ReadOnlyRootFilesystem == nil || !*sec.ReadOnlyRootFilesystem {
			t.Errorf("%s: sluice does not set readOnlyRootFilesystem: true", where)
		}
		if sec.AllowPrivilegeEscalation == nil || *sec.AllowPrivilegeEscalation {
			t.Errorf("%s: sluice does not set allowPrivilegeEscalation: false", where)
		}
		if !slices.Contains(sec.Capabilities.Drop, "ALL") {
			t.Errorf("%s: sluice drops capabilities %v, want ALL", where, sec.Capabilities.Drop)
		}
	}
	for _, r := range []string{"cpu", "memory"} {
		if c.Resources.Requests[r] == "" {
			t.Errorf("%s: sluice has no %s request", where, r)
		}
	}
	// The environment as the pod gives it, with stand-ins for what the
	// cluster fills in: a value sluice refuses makes the container exit 2
	// and crash-loop, and the loader beside it never starts.
	var environ []string
	for _, e := range c.Env {
		v := e.Value
		switch {
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			v = strings.Repeat("0123456789abcdef", 4) // what openssl rand -hex 32 gives
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil:
			v = "backfill-example" // a pod field: a name or a label's value
		case strings.HasSuffix(e.Name, "_FILE") && c.mounts(v):
			// A file of a mounted Secret: a stand-in with what it holds.
			f := filepath.Join(t.TempDir(), filepath.Base(v))
			if err := os.WriteFile(f, []byte(strings.Repeat("0123456789abcdef", 4)), 0o600); err != nil {
				t.Fatal(err)
			}
			v = f
		}
		environ = append(environ, e.Name+"="+v)
	}
	cfg, _, err := sidecar.LoadConfig(environ)
	if err != nil {
		t.Errorf("%s: sluice would exit 2 on this environment: %v", where, err)
	}
	var limit sidecar.ByteSize
	switch mem := c.Resources.Limits["memory"]; {
	case mem == "":
		t.Errorf("%s: sluice has no memory limit", where)
	case limit.UnmarshalText([]byte(mem)) != nil:
		t.Errorf("%s: memory limit %q is not a size this test reads", where, mem)
	case err == nil && int64(limit) <= sidecar.MemoryLimit(cfg):
		// Below Go's soft limit the kernel kills sluice before the
		// collector ever works hard to stay under it.
		t.Errorf("%s: memory limit %s is not above sluice's Go memory limit %v (SLUICE_BUFFER_BUDGET + 128MiB)", where, mem, sidecar.ByteSize(sidecar.MemoryLimit(cfg)))
	}
	dir, ok := c.env(sidecar.EnvPrefix + "STATE_DIR")
	if !ok {
		t.Errorf("%s: SLUICE_STATE_DIR is not set: job state would not survive a restart of the sidecar", where)
		return
	}
	mounted := ""
	for _, m := range c.VolumeMounts {
		if m.MountPath == dir {
			mounted = m.Name
		}
	}
	if mounted == "" {
		t.Errorf("%s: SLUICE_STATE_DIR %s is not a volume mount (the root filesystem is read-only)", where, dir)
		return
	}
	for _, v := range pt.Spec.Volumes {
		if v.Name == mounted && v.EmptyDir == nil {
			t.Errorf("%s: the state volume %s is not an emptyDir", where, mounted)
		}
	}
}

// TestDeployGuideSidecar: the sidecar that docs/deploy.md tells the reader
// to add to the loader's pod (its first YAML block) passes the checks the
// manifests pass. It is the block most deployments start from, and nothing
// else runs it.
func TestDeployGuideSidecar(t *testing.T) {
	b, err := os.ReadFile("../docs/deploy.md")
	if err != nil {
		t.Fatal(err)
	}
	// Every YAML block that runs sluice: step 1's pod spec, and the fleet
	// mode's Job, which a reader copies as it is.
	checked := 0
	for i, block := range strings.Split(string(b), "```yaml\n")[1:] {
		block, _, _ = strings.Cut(block, "```")
		where := fmt.Sprintf("docs/deploy.md, YAML block %d", i+1)
		var obj struct {
			Kind string `yaml:"kind"`
			Spec struct {
				Template podTemplate `yaml:"template"`
			} `yaml:"spec"`
		}
		if err := yaml.Unmarshal([]byte(block), &obj); err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		var pt podTemplate
		switch obj.Kind {
		case "":
			if err := yaml.Unmarshal([]byte(block), &pt.Spec); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
		case "Job", "Deployment", "StatefulSet":
			pt = obj.Spec.Template
		default:
			continue
		}
		idx := slices.IndexFunc(pt.Spec.InitContainers, func(c k8sContainer) bool { return c.Name == "sluice" })
		if idx < 0 {
			continue
		}
		sc := pt.Spec.InitContainers[idx]
		if sc.RestartPolicy != "Always" {
			t.Errorf("%s: init container sluice has restartPolicy %q, want Always (a native sidecar)", where, sc.RestartPolicy)
		}
		checkSluiceContainer(t, where, pt, sc, defaultAdminPort(t))
		checked++
	}
	if checked < 2 {
		t.Errorf("docs/deploy.md: %d YAML blocks run sluice as a native sidecar, want step 1's and the fleet mode's", checked)
	}
}

// completeRE is a call that completes a job through the admin API, with
// the job's id as the container's command writes it: literal, $VAR or
// ${VAR}.
var completeRE = regexp.MustCompile(`/v1/jobs/([^/"'\s]+)/complete`)

// checkDefaultJobNotCompleted: no container completes the job that
// SLUICE_JOB names. That job is the default job, a stream, whatever header
// the loader's writes carry: complete answers it 409, so a loader that
// ends with `curl -f .../complete` fails its Job after a load that went
// well, and the job is never stall-cancelled nor cleaned up either (the
// default job's causes are SLUICE_DEFAULT_JOB_AUTO_CANCEL_CAUSES, none).
func checkDefaultJobNotCompleted(t *testing.T, where string, pt podTemplate, sc k8sContainer) {
	t.Helper()
	src := sc.envSource(sidecar.EnvPrefix + "JOB")
	if src == "" {
		return
	}
	for _, c := range slices.Concat(pt.Spec.InitContainers, pt.Spec.Containers) {
		if c.Name == sc.Name {
			continue
		}
		for _, m := range completeRE.FindAllStringSubmatch(strings.Join(slices.Concat(c.Command, c.Args), " "), -1) {
			idSrc := "value " + m[1]
			if v, ok := strings.CutPrefix(m[1], "$"); ok {
				idSrc = c.envSource(strings.TrimSuffix(strings.TrimPrefix(v, "{"), "}"))
			}
			if idSrc == src {
				t.Errorf("%s: container %s completes job %s, which is sluice's %sJOB (%s): the default job is a stream and answers 409 to complete; name the job in X-Sluice-Job only",
					where, c.Name, m[1], sidecar.EnvPrefix, src)
			}
		}
	}
}

// checkPodMonitor checks that pm selects the pod and scrapes sluice's admin
// port at /metrics.
func checkPodMonitor(t *testing.T, pm k8sObject, where string, pt podTemplate, c k8sContainer) {
	t.Helper()
	var spec struct {
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Endpoints []struct {
			Port string `yaml:"port"`
			Path string `yaml:"path"`
		} `yaml:"podMetricsEndpoints"`
	}
	if err := pm.Spec.Decode(&spec); err != nil {
		t.Fatalf("%s: PodMonitor %s: %v", pm.file, pm.Metadata.Name, err)
	}
	if len(spec.Selector.MatchLabels) == 0 {
		t.Errorf("%s: PodMonitor %s selects no label", pm.file, pm.Metadata.Name)
	}
	for k, v := range spec.Selector.MatchLabels {
		if pt.Metadata.Labels[k] != v {
			t.Errorf("%s: the pod lacks the label %s=%q that PodMonitor %s selects", where, k, v, pm.Metadata.Name)
		}
	}
	if len(spec.Endpoints) == 0 {
		t.Errorf("%s: PodMonitor %s has no podMetricsEndpoints", pm.file, pm.Metadata.Name)
	}
	for _, e := range spec.Endpoints {
		if !slices.ContainsFunc(c.Ports, func(p struct {
			Name          string `yaml:"name"`
			ContainerPort int    `yaml:"containerPort"`
		}) bool {
			return p.Name == e.Port
		}) {
			t.Errorf("%s: PodMonitor %s scrapes port %q, which sluice does not declare", where, pm.Metadata.Name, e.Port)
		}
		if e.Path != "" && e.Path != "/metrics" {
			t.Errorf("%s: PodMonitor %s scrapes %s, sluice serves /metrics", pm.file, pm.Metadata.Name, e.Path)
		}
	}
}

// ruleFile is a Prometheus rule file.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Record      string            `yaml:"record"`
			Expr        string            `yaml:"expr"`
			For         string            `yaml:"for"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func loadRules(t *testing.T) ruleFile {
	t.Helper()
	b, err := os.ReadFile(deployRulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.Unmarshal(b, &rf); err != nil {
		t.Fatalf("%s: %v", deployRulesFile, err)
	}
	return rf
}

// requiredAlerts are the alerts an operator of sluice cannot do without:
// dropping one from the rule file fails here, not silently in production.
var requiredAlerts = []string{
	"SluiceDown", "SluiceJobLoopStuck", "SluiceJobStalled", "SluiceJobFailed", "SluiceSustainedThrottling",
	"SluiceUpstreamTimeouts", "SluiceRetryBudgetExhausted", "SluiceQueueSaturated",
	"SluiceStateWriteErrors", "SluiceStateWritesDeferred", "SluiceCredentialRefreshStorm",
	// Fleet mode: the fleet's Redis unreachable, or refusing the scripts.
	"SluiceFleetDegraded",
}

// TestDeployRulesInSync: the PrometheusRule carries exactly the groups of the
// plain rule file, so promtool's tests cover what the operator deploys.
func TestDeployRulesInSync(t *testing.T) {
	plain := loadRules(t)
	b, err := os.ReadFile(deployPromRule)
	if err != nil {
		t.Fatal(err)
	}
	var pr struct {
		Kind string   `yaml:"kind"`
		Spec ruleFile `yaml:"spec"`
	}
	if err := yaml.Unmarshal(b, &pr); err != nil {
		t.Fatalf("%s: %v", deployPromRule, err)
	}
	if pr.Kind != "PrometheusRule" {
		t.Fatalf("%s: kind %q, want PrometheusRule", deployPromRule, pr.Kind)
	}
	if !reflect.DeepEqual(plain, pr.Spec) {
		t.Errorf("%s and %s differ: keep the PrometheusRule's spec.groups identical to the rule file", deployPromRule, deployRulesFile)
	}
}

// TestDeployAlertsDocumentedAndTested: every required alert exists with a
// severity, a summary, a description and a runbook link to its section of
// docs/runbook.md, and the promtool tests check it both firing and silent.
func TestDeployAlertsDocumentedAndTested(t *testing.T) {
	rf := loadRules(t)
	runbook, err := os.ReadFile(deployRunbook)
	if err != nil {
		t.Fatal(err)
	}
	headings := map[string]bool{}
	for _, line := range strings.Split(string(runbook), "\n") {
		if h, ok := strings.CutPrefix(line, "## "); ok {
			headings[strings.TrimSpace(h)] = true
		}
	}
	b, err := os.ReadFile(deployRuleTests)
	if err != nil {
		t.Fatal(err)
	}
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal(b, &tests); err != nil {
		t.Fatalf("%s: %v", deployRuleTests, err)
	}
	fires, silent := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				silent[a.Alertname] = true
			}
		}
	}

	seen := map[string]bool{}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			seen[r.Alert] = true
			switch r.Labels["severity"] {
			case "critical", "warning":
			default:
				t.Errorf("%s: severity %q, want critical or warning", r.Alert, r.Labels["severity"])
			}
			for _, a := range []string{"summary", "description", "runbook_url"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s: no %s annotation", r.Alert, a)
				}
			}
			if want := "docs/runbook.md#" + strings.ToLower(r.Alert); !strings.HasSuffix(r.Annotations["runbook_url"], want) {
				t.Errorf("%s: runbook_url %q, want it to end in %s", r.Alert, r.Annotations["runbook_url"], want)
			}
			if !headings[r.Alert] {
				t.Errorf("%s: %s has no section \"## %s\"", r.Alert, deployRunbook, r.Alert)
			}
			if !fires[r.Alert] {
				t.Errorf("%s: no promtool test expects it to fire", r.Alert)
			}
			if !silent[r.Alert] {
				t.Errorf("%s: no promtool test expects it to stay silent", r.Alert)
			}
		}
	}
	for _, a := range requiredAlerts {
		if !seen[a] {
			t.Errorf("%s: required alert missing from %s", a, deployRulesFile)
		}
	}
}

// deployQuery is a PromQL expression and where it comes from.
type deployQuery struct{ where, expr string }

// deployQueries returns every PromQL expression of the rules and of the
// dashboard (panel targets and template variable queries).
func deployQueries(t *testing.T) []deployQuery {
	t.Helper()
	var qs []deployQuery
	for _, g := range loadRules(t).Groups {
		for _, r := range g.Rules {
			qs = append(qs, deployQuery{deployRulesFile + ": " + r.Alert + r.Record, r.Expr})
		}
	}
	b, err := os.ReadFile(deployDashboard)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", deployDashboard, err)
	}
	type panel struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"`
	}
	var walk func([]json.RawMessage)
	walk = func(raw []json.RawMessage) {
		for _, r := range raw {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatalf("%s: %v", deployDashboard, err)
			}
			for _, tg := range p.Targets {
				qs = append(qs, deployQuery{deployDashboard + ": panel " + strconv.Quote(p.Title), tg.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q string
		if json.Unmarshal(v.Query, &q) != nil {
			var obj struct {
				Query string `json:"query"`
			}
			if err := json.Unmarshal(v.Query, &obj); err != nil {
				t.Fatalf("%s: variable %s: %v", deployDashboard, v.Name, err)
			}
			q = obj.Query
		}
		qs = append(qs, deployQuery{deployDashboard + ": variable " + v.Name, q})
	}
	return qs
}

// TestDeployDashboardQueriesParse has promtool parse every dashboard query,
// with Grafana's variables replaced, as recording rules. It needs promtool:
// skipped without it, except under .ci/deploy-checks.sh, which installs it
// and sets DEPLOY_CHECKS_REQUIRE_PROMTOOL.
func TestDeployDashboardQueriesParse(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("DEPLOY_CHECKS_REQUIRE_PROMTOOL") != "" {
			t.Fatalf("promtool: %v", err)
		}
		t.Skip("promtool not installed (.ci/deploy-checks.sh installs it and runs this test)")
	}
	grafanaVars := strings.NewReplacer("$__rate_interval", "5m", "$namespace", ".*", "$pod", ".*", "$job_id", ".*")
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	for _, q := range deployQueries(t) {
		if strings.HasPrefix(q.where, deployDashboard) && !strings.Contains(q.where, ": variable ") {
			rules = append(rules, rule{Record: "dashboard:query" + strconv.Itoa(len(rules)), Expr: grafanaVars.Replace(q.expr)})
		}
	}
	if len(rules) == 0 {
		t.Fatal("no dashboard query found")
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", file).CombinedOutput(); err != nil {
		t.Errorf("promtool check rules on the dashboard's %d queries: %v\n%s", len(rules), err, out)
	}
}

// scrapedFamily is a metric family read from /metrics: its type, and the
// label names of its samples with the values each takes.
type scrapedFamily struct {
	typ    string
	labels map[string]bool
	values map[string]map[string]bool
}

var (
	sampleRE = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s`)
	labelRE  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"`)
	metricRE = regexp.MustCompile(`sluice_[a-z0-9_]+`)
	// selectorRE is a sluice metric with a label selector.
	selectorRE = regexp.MustCompile(`(sluice_[a-z0-9_]+)\s*\{([^}]*)\}`)
)

// parseExposition reads the text exposition format into families.
func parseExposition(t *testing.T, r io.Reader) map[string]*scrapedFamily {
	t.Helper()
	fams := map[string]*scrapedFamily{}
	var cur *scrapedFamily
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			f := strings.Fields(rest)
			if len(f) != 2 {
				t.Fatalf("bad TYPE line %q", line)
			}
			cur = &scrapedFamily{typ: f[1], labels: map[string]bool{}, values: map[string]map[string]bool{}}
			fams[f[0]] = cur
			continue
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := sampleRE.FindStringSubmatch(line)
		if m == nil || cur == nil {
			t.Fatalf("bad sample line %q", line)
		}
		for _, l := range labelRE.FindAllStringSubmatch(m[2], -1) {
			if l[1] != "le" && l[1] != "quantile" {
				cur.labels[l[1]] = true
				if cur.values[l[1]] == nil {
					cur.values[l[1]] = map[string]bool{}
				}
				cur.values[l[1]][l[3]] = true
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return fams
}

// family returns the family a name in a query refers to: the name itself,
// or a histogram's or summary's _bucket, _sum or _count series.
func family(fams map[string]*scrapedFamily, name string) (*scrapedFamily, bool) {
	if f, ok := fams[name]; ok {
		return f, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if f, ok := fams[base]; ok && (f.typ == "histogram" || (f.typ == "summary" && suffix != "_bucket")) {
				return f, true
			}
		}
	}
	return nil, false
}

// openLabels are labels whose values sluice sets as they come (a job's
// id, a status code, a scope, a congestion signal's reason), by name or as
// family{label}: a query may name a value the test's scrape never saw.
var openLabels = map[string]bool{
	"job_id": true, "code": true, "scope": true,
	"sluice_upstream_congestion_signals_total{reason}": true,
}

// counterFnRE is a function over a counter's range, with the series it
// reads.
var counterFnRE = regexp.MustCompile(`\b(rate|irate|increase|resets)\s*\(\s*(sluice_[a-z0-9_]+)`)

// targetLabels are the labels Prometheus adds to every series at scrape
// time (the PodMonitor's and prometheus.example.yml's relabelling).
var targetLabels = map[string]bool{"job": true, "namespace": true, "pod": true, "container": true, "instance": true, "endpoint": true}

// TestDeployMetricsExported starts sluice in-process, pushes writes through
// its proxy so that every kind of series exists (a job, a throttled attempt
// and its retry, a write pushed back by a full queue, credentials fetched),
// scrapes /metrics from the admin handler, and fails if a metric named in an
// alert or a dashboard query is not exported, or if a selector uses a label
// the metric does not have or a job state or attempt kind the code does not
// know. It also checks that every probe path in the manifests answers 200.
func TestDeployMetricsExported(t *testing.T) {
	queries := deployQueries(t)
	probePaths := map[string]bool{}
	for _, o := range loadManifests(t) {
		if pt, ok := podTemplateOf(t, o); ok {
			for _, c := range slices.Concat(pt.Spec.InitContainers, pt.Spec.Containers) {
				for _, p := range []*k8sProbe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
					if c.Name == "sluice" && p != nil && p.HTTPGet != nil {
						probePaths[p.HTTPGet.Path] = true
					}
				}
			}
		}
	}
	if len(probePaths) == 0 {
		t.Fatal("no sluice probe in the manifests")
	}

	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("s3cr3t\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	synctest.Test(t, func(t *testing.T) {
		block := make(chan struct{})
		var mu sync.Mutex
		throttled := false
		store := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			switch r.URL.Path {
			case "/hold":
				<-block
			case "/throttle-once":
				mu.Lock()
				first := !throttled
				throttled = true
				mu.Unlock()
				if first {
					w.Header().Set("Retry-After", "1")
					w.WriteHeader(http.StatusTooManyRequests)
					return
				}
			}
			w.WriteHeader(http.StatusOK)
		})
		cfg, _, err := sidecar.LoadConfig([]string{
			"SLUICE_UPSTREAM_URL=http://store.test", "SLUICE_ADMIN_ADDR=127.0.0.1:0", "SLUICE_LISTEN_ADDR=127.0.0.1:0",
			"SLUICE_INITIAL_CONCURRENCY=1", "SLUICE_MAX_CONCURRENCY=1", "SLUICE_QUEUE_MAX=2",
			"SLUICE_UPSTREAM_AUTH=bearer-file", "SLUICE_TOKEN_FILE=" + tokenFile,
		})
		if err != nil {
			t.Fatalf("config: %v", err)
		}
		s, err := sidecar.NewServer(cfg, sidecar.Options{Logger: slog.New(slog.DiscardHandler),
			Store: &state.MemStore{}, Transport: memTransport{store}})
		if err != nil {
			t.Fatalf("NewServer: %v", err)
		}
		// Serve as in production, on in-memory listeners: readiness, loops
		// and the admin server are the real ones.
		proxyLn, adminLn := pipenet.Listen(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}), pipenet.Listen(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9090})
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- s.Serve(ctx, proxyLn, adminLn) }()
		defer func() {
			cancel()
			if err := <-served; err != nil {
				t.Errorf("Serve: %v", err)
			}
		}()
		synctest.Wait() // listening, first credential fetch done
		admin := &http.Client{Transport: &http.Transport{DialContext: adminLn.Dial, DisableKeepAlives: true}}
		get := func(path string) (int, []byte) {
			t.Helper()
			resp, err := admin.Get("http://sluice-admin" + path)
			if err != nil {
				t.Fatalf("GET %s: %v", path, err)
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("GET %s: %v", path, err)
			}
			return resp.StatusCode, b
		}

		const job = "deploy-test"
		h := s.ProxyHandler()
		// One write in flight, two queued, the fourth pushed back.
		codes := make(chan int, 4)
		for range 4 {
			go func() {
				codes <- send(h, context.Background(), http.MethodPut, "/hold", "x", proxy.HeaderJob, job).Code
			}()
			synctest.Wait()
		}
		if c := <-codes; c != http.StatusTooManyRequests {
			t.Fatalf("fourth write got %d, want 429 (queue full)", c)
		}
		close(block)
		for range 3 {
			if c := <-codes; c != http.StatusOK {
				t.Fatalf("held write got %d, want 200", c)
			}
		}
		// A throttled write, retried by sluice after the store's Retry-After.
		if rec := send(h, context.Background(), http.MethodPut, "/throttle-once", "x", proxy.HeaderJob, job); rec.Code != http.StatusOK {
			t.Fatalf("throttled write got %d after a retry, want 200", rec.Code)
		}

		for p := range probePaths {
			if code, body := get(p); code != http.StatusOK {
				t.Errorf("probe GET %s answered %d, want 200: %s", p, code, body)
			}
		}
		code, body := get("/metrics")
		if code != http.StatusOK {
			t.Fatalf("GET /metrics: %d %s", code, body)
		}
		checkQueries(t, queries, parseExposition(t, bytes.NewReader(body)))
	})
}

// memTransport serves upstream attempts from an in-process handler, so that
// the store runs under testing/synctest (no sockets). Like a real transport
// it gives up when the attempt's context ends.
type memTransport struct{ h http.Handler }

func (m memTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body == nil { // a server's request always has a body
		req = req.Clone(req.Context())
		req.Body = http.NoBody
	}
	done := make(chan *http.Response, 1)
	go func() {
		rec := httptest.NewRecorder()
		m.h.ServeHTTP(rec, req)
		done <- rec.Result()
	}()
	select {
	case resp := <-done:
		resp.Request = req
		return resp, nil
	case <-req.Context().Done():
		return nil, req.Context().Err()
	}
}

// send makes one loader request through h and returns the recorded answer.
func send(h http.Handler, ctx context.Context, method, path, body string, header ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequestWithContext(ctx, method, path, strings.NewReader(body))
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func checkQueries(t *testing.T, queries []deployQuery, fams map[string]*scrapedFamily) {
	t.Helper()
	states := map[string]bool{}
	for _, st := range state.States() {
		states[st.String()] = true
	}
	kinds := map[string]bool{}
	for k := classify.Kind(0); !strings.HasPrefix(k.String(), "kind("); k++ {
		kinds[k.String()] = true
	}
	// The rate's unit is the configuration's: one run exports one, and
	// a dashboard names each.
	units := map[string]bool{}
	for _, u := range []string{"requests", "bytes"} {
		if _, _, err := sidecar.LoadConfig([]string{"SLUICE_UPSTREAM_URL=http://store.test", "SLUICE_RATE_UNIT=" + u}); err == nil {
			units[u] = true
		}
	}
	known := map[string]map[string]bool{"state": states, "kind": kinds, "unit": units}

	names := 0
	missing := map[string][]string{}
	for _, q := range queries {
		for _, name := range metricRE.FindAllString(q.expr, -1) {
			names++
			if _, ok := family(fams, name); !ok {
				missing[name] = append(missing[name], q.where)
			}
		}
		for _, sel := range selectorRE.FindAllStringSubmatch(q.expr, -1) {
			f, ok := family(fams, sel[1])
			if !ok {
				continue // reported above
			}
			for _, m := range labelRE.FindAllStringSubmatch(sel[2], -1) {
				label, op, value := m[1], m[2], m[3]
				switch {
				case targetLabels[label]:
				case !f.labels[label]:
					t.Errorf("%s: %s has no label %q (it has %v)", q.where, sel[1], label, sortedKeys(f.labels))
				}
				if op != "=" && op != "=~" || strings.Contains(value, "$") {
					continue
				}
				if vals, ok := known[label]; ok {
					for _, v := range strings.Split(value, "|") {
						if !vals[v] {
							t.Errorf("%s: %s{%s%s%q}: %q is not a %s the code knows (%v)", q.where, sel[1], label, op, value, v, label, sortedKeys(vals))
						}
					}
					continue
				}
				// The other labels' values are a closed set that sluice
				// exports from the start (pushback reasons, phases, classes,
				// fleet modes, results): one it never sets would leave the
				// selector empty for ever, and an alert on it silent.
				if targetLabels[label] || openLabels[label] || openLabels[sel[1]+"{"+label+"}"] || !f.labels[label] {
					continue
				}
				for _, v := range strings.Split(value, "|") {
					if !f.values[label][v] {
						t.Errorf("%s: %s{%s%s%q}: sluice never exports %s=%q (it exports %v)", q.where, sel[1], label, op, value, label, v, sortedKeys(f.values[label]))
					}
				}
			}
		}
	}
	for _, q := range queries {
		for _, m := range counterFnRE.FindAllStringSubmatch(q.expr, -1) {
			fn, name := m[1], m[2]
			f, ok := family(fams, name)
			if !ok {
				continue // reported above
			}
			if name == strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count") && f.typ != "counter" {
				t.Errorf("%s: %s(%s): %s is a %s; %s is meant for counters (a gauge's falls read as resets)", q.where, fn, name, name, f.typ, fn)
			}
		}
	}
	for name, where := range missing {
		t.Errorf("%s is not exported by sluice, but is queried by %s", name, strings.Join(slices.Compact(where), "; "))
	}
	if names < 20 {
		t.Errorf("found only %d metric names in %d queries: is the extraction broken?", names, len(queries))
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestDeployDashboardFleetRow: the dashboard has a "Fleet" row, and its
// panels chart every series fleet mode exports (lease, budget, members,
// demand, mode and degraded, refresh latency and errors): a metric added
// to package fleet without a panel fails here.
func TestDeployDashboardFleetRow(t *testing.T) {
	b, err := os.ReadFile(deployDashboard)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", deployDashboard, err)
	}
	var exprs []string
	inRow := false
	for _, p := range dash.Panels {
		if p.Type == "row" {
			inRow = p.Title == "Fleet"
			continue
		}
		if inRow {
			for _, tg := range p.Targets {
				exprs = append(exprs, tg.Expr)
			}
		}
	}
	if len(exprs) == 0 {
		t.Fatalf("%s: no row \"Fleet\" with panels", deployDashboard)
	}
	reg := prometheus.NewRegistry()
	fleet.NewMetrics(reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		name := mf.GetName()
		if !slices.ContainsFunc(exprs, func(e string) bool { return strings.Contains(e, name) }) {
			t.Errorf("%s: the Fleet row charts no query of %s", deployDashboard, name)
		}
	}
}
