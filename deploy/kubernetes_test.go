package deploy_test

import (
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scoregate/scoregate/config"
)

// The few Kubernetes fields the checks read.
type (
	k8sMeta struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	}
	k8sObject struct {
		APIVersion string            `yaml:"apiVersion"`
		Kind       string            `yaml:"kind"`
		Metadata   k8sMeta           `yaml:"metadata"`
		Data       map[string]string `yaml:"data"`
		Spec       k8sSpec           `yaml:"spec"`
	}
	// k8sSpec holds the spec fields of every kind checked; each kind uses some.
	k8sSpec struct {
		// Deployment
		Replicas *int `yaml:"replicas"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata k8sMeta `yaml:"metadata"`
			Spec     podSpec `yaml:"spec"`
		} `yaml:"template"`
		// Service (its selector is a plain map, read separately)
		Ports []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort any    `yaml:"targetPort"`
		} `yaml:"ports"`
		// HorizontalPodAutoscaler
		ScaleTargetRef struct {
			Kind string `yaml:"kind"`
			Name string `yaml:"name"`
		} `yaml:"scaleTargetRef"`
		MinReplicas *int `yaml:"minReplicas"`
		MaxReplicas int  `yaml:"maxReplicas"`
		// PodDisruptionBudget
		MinAvailable any `yaml:"minAvailable"`
		// NetworkPolicy
		PodSelector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"podSelector"`
		PolicyTypes []string `yaml:"policyTypes"`
		Ingress     []struct {
			From []struct {
				PodSelector *struct {
					MatchLabels map[string]string `yaml:"matchLabels"`
				} `yaml:"podSelector"`
				NamespaceSelector any `yaml:"namespaceSelector"`
				IPBlock           any `yaml:"ipBlock"`
			} `yaml:"from"`
			Ports []struct {
				Port any `yaml:"port"`
			} `yaml:"ports"`
		} `yaml:"ingress"`
	}
	podSpec struct {
		TerminationGracePeriodSeconds *int  `yaml:"terminationGracePeriodSeconds"`
		AutomountServiceAccountToken  *bool `yaml:"automountServiceAccountToken"`
		SecurityContext               struct {
			RunAsNonRoot   *bool `yaml:"runAsNonRoot"`
			RunAsUser      *int  `yaml:"runAsUser"`
			SeccompProfile struct {
				Type string `yaml:"type"`
			} `yaml:"seccompProfile"`
		} `yaml:"securityContext"`
		InitContainers []container `yaml:"initContainers"`
		Containers     []container `yaml:"containers"`
		Volumes        []struct {
			Name      string `yaml:"name"`
			ConfigMap *struct {
				Name string `yaml:"name"`
			} `yaml:"configMap"`
			EmptyDir              any `yaml:"emptyDir"`
			PersistentVolumeClaim any `yaml:"persistentVolumeClaim"`
		} `yaml:"volumes"`
	}
	container struct {
		Name          string   `yaml:"name"`
		Image         string   `yaml:"image"`
		Args          []string `yaml:"args"`
		RestartPolicy string   `yaml:"restartPolicy"`
		Ports         []struct {
			Name          string `yaml:"name"`
			ContainerPort int    `yaml:"containerPort"`
		} `yaml:"ports"`
		Env []struct {
			Name      string `yaml:"name"`
			Value     string `yaml:"value"`
			ValueFrom *struct {
				SecretKeyRef *struct {
					Name string `yaml:"name"`
					Key  string `yaml:"key"`
				} `yaml:"secretKeyRef"`
			} `yaml:"valueFrom"`
		} `yaml:"env"`
		LivenessProbe  *probe `yaml:"livenessProbe"`
		ReadinessProbe *probe `yaml:"readinessProbe"`
		StartupProbe   *probe `yaml:"startupProbe"`
		Lifecycle      struct {
			PreStop *struct {
				Sleep *struct {
					Seconds int `yaml:"seconds"`
				} `yaml:"sleep"`
				Exec any `yaml:"exec"`
			} `yaml:"preStop"`
		} `yaml:"lifecycle"`
		Resources struct {
			Requests map[string]string `yaml:"requests"`
			Limits   map[string]string `yaml:"limits"`
		} `yaml:"resources"`
		SecurityContext *struct {
			RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
			AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
			ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
			Capabilities             struct {
				Drop []string `yaml:"drop"`
				Add  []string `yaml:"add"`
			} `yaml:"capabilities"`
			SeccompProfile struct {
				Type string `yaml:"type"`
			} `yaml:"seccompProfile"`
		} `yaml:"securityContext"`
		VolumeMounts []struct {
			Name      string `yaml:"name"`
			MountPath string `yaml:"mountPath"`
			ReadOnly  bool   `yaml:"readOnly"`
		} `yaml:"volumeMounts"`
	}
	probe struct {
		HTTPGet *struct {
			Path string `yaml:"path"`
			Port any    `yaml:"port"`
		} `yaml:"httpGet"`
	}
)

// serviceSelector reads a Service's spec.selector, a plain label map.
type serviceSelector struct {
	Kind string `yaml:"kind"`
	Spec struct {
		Selector map[string]any `yaml:"selector"` // a Deployment's holds matchLabels
	} `yaml:"spec"`
}

// checkContainer reports what a container lacks of the hardening every container here has.
func checkContainer(t *testing.T, where string, c container) {
	t.Helper()
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Errorf("%s: container %s has no securityContext", where, c.Name)
		return
	case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot:
		t.Errorf("%s: container %s: runAsNonRoot is not true", where, c.Name)
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Errorf("%s: container %s: allowPrivilegeEscalation is not false", where, c.Name)
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Errorf("%s: container %s: readOnlyRootFilesystem is not true", where, c.Name)
	case !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) || len(sc.Capabilities.Add) > 0:
		t.Errorf("%s: container %s: capabilities drop %q add %q, want drop [ALL] and no add", where, c.Name, sc.Capabilities.Drop, sc.Capabilities.Add)
	case sc.SeccompProfile.Type != "RuntimeDefault":
		t.Errorf("%s: container %s: seccompProfile %q, want RuntimeDefault", where, c.Name, sc.SeccompProfile.Type)
	}
	for _, r := range []string{"cpu", "memory"} {
		if c.Resources.Requests[r] == "" || c.Resources.Limits[r] == "" {
			t.Errorf("%s: container %s: resources %+v lack a %s request or limit", where, c.Name, c.Resources, r)
		}
	}
}

// Every container written out in full under deploy/kubernetes (one that names its image), in
// resources and patches alike, is hardened and has resource limits. This holds without
// kustomize; the rendered overlays are checked whole below.
func TestKubernetesContainersAsWritten(t *testing.T) {
	n := 0
	for _, file := range yamlFiles(t) {
		if !strings.Contains(file, filepath.Join("deploy", "kubernetes")) || filepath.Base(file) == "gateway.yaml" {
			continue
		}
		for _, obj := range readDocs[k8sObject](t, file) {
			for _, c := range slices.Concat(obj.Spec.Template.Spec.InitContainers, obj.Spec.Template.Spec.Containers) {
				if c.Image == "" {
					continue // a patch of part of a container
				}
				n++
				checkContainer(t, file, c)
			}
		}
	}
	if n < 3 {
		t.Errorf("checked %d containers; want the model and the two gateways at least", n)
	}
}

// kustomize renders an overlay with kubectl (or kustomize), or skips the test loudly.
func kustomize(t *testing.T, dir string) []k8sObject {
	t.Helper()
	var cmd *exec.Cmd
	if p, err := exec.LookPath("kubectl"); err == nil {
		cmd = exec.Command(p, "kustomize", dir)
	} else if p, err := exec.LookPath("kustomize"); err == nil {
		cmd = exec.Command(p, "build", dir)
	} else {
		skipLoudly(t, "neither kubectl nor kustomize is installed, so the overlays are not rendered and checked whole (Debian does not package them)")
	}
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("%s: %v\n%s", cmd, err, msg)
	}
	objs, err := decodeAll[k8sObject](out)
	if err != nil {
		t.Fatalf("rendered %s: %v", dir, err)
	}
	sels, err := decodeAll[serviceSelector](out)
	if err != nil {
		t.Fatalf("rendered %s: %v", dir, err)
	}
	for i := range objs {
		if objs[i].Kind == "Service" {
			objs[i].Spec.Selector.MatchLabels = map[string]string{}
			for k, v := range sels[i].Spec.Selector {
				objs[i].Spec.Selector.MatchLabels[k] = fmt.Sprint(v)
			}
		}
	}
	return objs
}

// rendered is an overlay's objects with what the checks look up.
type rendered struct {
	objs []k8sObject
}

func (r rendered) find(kind, name string) (k8sObject, bool) {
	for _, o := range r.objs {
		if o.Kind == kind && o.Metadata.Name == name {
			return o, true
		}
	}
	return k8sObject{}, false
}

func (r rendered) all(kind string) []k8sObject {
	var out []k8sObject
	for _, o := range r.objs {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

// matches reports whether a label selector selects labels.
func matches(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// gatewayPod is a pod template running the gateway, with the gateway container and its
// configuration read from the ConfigMap it mounts.
type gatewayPod struct {
	deployment k8sObject
	gateway    container
	sidecar    bool
	cfg        *config.Config
}

// findGatewayPod finds the Deployment whose pods run the gateway and parses the configuration
// the gateway reads, with the environment the container sets (Secret values stood in for).
func findGatewayPod(t *testing.T, r rendered) gatewayPod {
	t.Helper()
	var found []gatewayPod
	for _, d := range r.all("Deployment") {
		spec := d.Spec.Template.Spec
		for i, c := range slices.Concat(spec.InitContainers, spec.Containers) {
			if c.Name == "gateway" {
				found = append(found, gatewayPod{deployment: d, gateway: c, sidecar: i < len(spec.InitContainers)})
			}
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d Deployments run a container named gateway, want 1", len(found))
	}
	gp := found[0]
	if want := []string{"serve", "-config", "/etc/scoregate/gateway.yaml"}; !slices.Equal(gp.gateway.Args, want) {
		t.Errorf("gateway args %q, want %q", gp.gateway.Args, want)
	}
	// The configuration: the ConfigMap volume mounted at /etc/scoregate.
	var cmName string
	for _, m := range gp.gateway.VolumeMounts {
		if m.MountPath == "/etc/scoregate" {
			for _, v := range gp.deployment.Spec.Template.Spec.Volumes {
				if v.Name == m.Name && v.ConfigMap != nil {
					cmName = v.ConfigMap.Name
				}
			}
		}
	}
	cm, ok := r.find("ConfigMap", cmName)
	if !ok || cm.Data["gateway.yaml"] == "" {
		t.Fatalf("no ConfigMap with gateway.yaml mounted at /etc/scoregate (volume's ConfigMap %q)", cmName)
	}
	env := map[string]string{}
	secretStandIns := map[string]string{
		"redis-url": "redis://gateway:password@redis.example.com:6379/0",
		"admin-key": strings.Repeat("k", 43),
	}
	for _, e := range gp.gateway.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil:
			v, ok := secretStandIns[e.ValueFrom.SecretKeyRef.Key]
			if !ok {
				t.Errorf("env %s from the unknown Secret key %s", e.Name, e.ValueFrom.SecretKeyRef.Key)
			}
			env[e.Name] = v
		}
	}
	gp.cfg = gatewayConfig(t, "ConfigMap "+cmName, []byte(cm.Data["gateway.yaml"]), env)
	return gp
}

// containerPort resolves a probe's or Service's port (a number, or a port name of c).
func containerPort(t *testing.T, c container, p any) int {
	t.Helper()
	switch v := p.(type) {
	case int:
		return v
	case string:
		for _, cp := range c.Ports {
			if cp.Name == v {
				return cp.ContainerPort
			}
		}
	}
	return -1
}

// checkGatewayPod checks what both overlays promise of the gateway's pods.
func checkGatewayPod(t *testing.T, gp gatewayPod) {
	t.Helper()
	spec := gp.deployment.Spec.Template.Spec
	cfg := gp.cfg

	// Probes on the admin port.
	adminPort := port(t, cfg.AdminListen)
	for _, p := range []struct {
		name  string
		probe *probe
		path  string
	}{
		{"livenessProbe", gp.gateway.LivenessProbe, "/livez"},
		{"readinessProbe", gp.gateway.ReadinessProbe, "/readyz"},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("gateway has no HTTP %s", p.name)
			continue
		}
		if p.probe.HTTPGet.Path != p.path {
			t.Errorf("gateway %s path %q, want %s", p.name, p.probe.HTTPGet.Path, p.path)
		}
		if got := containerPort(t, gp.gateway, p.probe.HTTPGet.Port); got != adminPort {
			t.Errorf("gateway %s on port %v (%d), want admin_listen's %d", p.name, p.probe.HTTPGet.Port, got, adminPort)
		}
	}
	if strings.HasPrefix(cfg.AdminListen, "127.") || strings.HasPrefix(cfg.AdminListen, "localhost") {
		t.Errorf("admin_listen %q: kubelet probes the pod's address, not loopback", cfg.AdminListen)
	}

	// Every container, the pod and the store folder.
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		checkContainer(t, gp.deployment.Metadata.Name, c)
	}
	if sc := spec.SecurityContext; sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.SeccompProfile.Type != "RuntimeDefault" {
		t.Errorf("pod securityContext %+v: want runAsNonRoot and seccompProfile RuntimeDefault", sc)
	}
	if a := spec.AutomountServiceAccountToken; a == nil || *a {
		t.Error("pods mount a service account token; the gateway never calls the Kubernetes API")
	}
	writable := false
	for _, m := range gp.gateway.VolumeMounts {
		writable = writable || (m.MountPath == cfg.Store.Dir && !m.ReadOnly)
	}
	if !writable {
		t.Errorf("store.dir %s is not a writable volume (the root file system is read-only)", cfg.Store.Dir)
	}
	for _, want := range []string{"GATEWAY_STORE_REDIS_URL", "GATEWAY_ADMIN_KEY"} {
		fromSecret := false
		for _, e := range gp.gateway.Env {
			fromSecret = fromSecret || (e.Name == want && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name == "scoregate")
		}
		if !fromSecret {
			t.Errorf("gateway env %s does not come from the Secret scoregate", want)
		}
	}
	if !cfg.Store.Shared() {
		t.Error("the gateways do not share a Redis store: each pod would have keys of its own")
	}

	// The grace period covers every preStop sleep, the drain and the shutdown.
	var preStop time.Duration
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		if ps := c.Lifecycle.PreStop; ps != nil {
			if ps.Sleep == nil {
				t.Errorf("container %s: preStop is not a sleep action (the distroless images have no sleep binary)", c.Name)
				continue
			}
			preStop += time.Duration(ps.Sleep.Seconds) * time.Second
		}
	}
	if spec.TerminationGracePeriodSeconds == nil {
		t.Fatal("no terminationGracePeriodSeconds")
	}
	grace := time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second
	if need := preStop + drainBudget(cfg); grace <= need {
		t.Errorf("terminationGracePeriodSeconds %s is not over preStop %s + drain_delay %s + shutdown_timeout %s",
			grace, preStop, cfg.Server.DrainDelay, cfg.Server.ShutdownTimeout)
	}
}

func TestKubernetesSidecarOverlay(t *testing.T) {
	r := rendered{kustomize(t, repoPath("deploy", "kubernetes", "overlays", "sidecar"))}
	gp := findGatewayPod(t, r)
	checkGatewayPod(t, gp)
	if !gp.sidecar || gp.gateway.RestartPolicy != "Always" {
		t.Errorf("gateway is not a native sidecar (an init container with restartPolicy Always)")
	}
	spec := gp.deployment.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("%d main containers, want the model alone", len(spec.Containers))
	}
	model := spec.Containers[0]
	// Kubernetes stops a native sidecar after the main containers: the model's preStop sleep is
	// the drain (the pod leaves the endpoints while both still serve), and the gateway, told to
	// stop last, has nothing left to drain.
	if ps := model.Lifecycle.PreStop; ps == nil || ps.Sleep == nil || ps.Sleep.Seconds < 5 {
		t.Error("the model has no preStop sleep of 5s or more: it would stop while the pod is still in the Service's endpoints")
	}
	if gp.gateway.Lifecycle.PreStop != nil || gp.cfg.Server.DrainDelay != 0 {
		t.Errorf("the sidecar gateway drains again (preStop %v, drain_delay %s) after the model has stopped", gp.gateway.Lifecycle.PreStop, gp.cfg.Server.DrainDelay)
	}
	// Only the gateway's ports are declared on the pod for others to reach: the model's port is
	// for the gateway, over loopback.
	for _, c := range spec.Containers {
		for _, p := range c.Ports {
			for _, svc := range r.all("Service") {
				for _, sp := range svc.Spec.Ports {
					if containerPort(t, c, sp.TargetPort) == p.ContainerPort {
						t.Errorf("Service %s reaches container %s's port %d", svc.Metadata.Name, c.Name, p.ContainerPort)
					}
				}
			}
		}
	}
	// The gateway forwards to the model in the same pod.
	modelPorts := map[int]bool{}
	for _, p := range model.Ports {
		modelPorts[p.ContainerPort] = true
	}
	ups := gp.cfg.Services[0].AllUpstreams()
	if len(ups) != 1 || !regexp.MustCompile(`^http://(127\.0\.0\.1|localhost):\d+$`).MatchString(ups[0]) || !modelPorts[port(t, ups[0])] {
		t.Errorf("upstreams %q: want the model's port (%v) on loopback", ups, slices.Collect(maps.Keys(modelPorts)))
	}
	// The Service reaches the gateway's port and nothing else.
	svcs := r.all("Service")
	if len(svcs) != 1 {
		t.Fatalf("%d Services, want 1", len(svcs))
	}
	listen := port(t, gp.cfg.Listen)
	for _, p := range svcs[0].Spec.Ports {
		if got := containerPort(t, gp.gateway, p.TargetPort); got != listen {
			t.Errorf("Service port %d targets %v, want the gateway's %d only", p.Port, p.TargetPort, listen)
		}
	}
	if !matches(svcs[0].Spec.Selector.MatchLabels, gp.deployment.Spec.Template.Metadata.Labels) {
		t.Error("the Service does not select the pods")
	}
	// No NetworkPolicy opens the model's port.
	for _, np := range r.all("NetworkPolicy") {
		if !matches(np.Spec.PodSelector.MatchLabels, gp.deployment.Spec.Template.Metadata.Labels) {
			continue
		}
		for _, rule := range np.Spec.Ingress {
			if len(rule.Ports) == 0 {
				t.Errorf("NetworkPolicy %s admits every port", np.Metadata.Name)
			}
			for _, p := range rule.Ports {
				if n, ok := p.Port.(int); !ok || modelPorts[n] {
					t.Errorf("NetworkPolicy %s admits port %v: the model's own port must stay inside the pod", np.Metadata.Name, p.Port)
				}
			}
		}
	}
	if len(r.all("NetworkPolicy")) == 0 {
		t.Error("no NetworkPolicy keeps the model's port inside the pod")
	}
}

func TestKubernetesEdgeOverlay(t *testing.T) {
	r := rendered{kustomize(t, repoPath("deploy", "kubernetes", "overlays", "edge"))}
	gp := findGatewayPod(t, r)
	checkGatewayPod(t, gp)
	gw := gp.deployment
	gwLabels := gw.Spec.Template.Metadata.Labels
	if gp.sidecar {
		t.Error("the edge gateway is a sidecar")
	}
	if gw.Spec.Replicas == nil || *gw.Spec.Replicas < 2 {
		t.Errorf("gateway replicas %v, want at least 2", gw.Spec.Replicas)
	}
	// The preStop sleep keeps the gateway serving while the pod leaves the Service's endpoints;
	// server.drain_delay does the same after SIGTERM for balancers that probe /readyz. The two
	// drains match, and last as long as kube-proxy and ingress controllers commonly need.
	if ps := gp.gateway.Lifecycle.PreStop; ps == nil || ps.Sleep == nil || ps.Sleep.Seconds == 0 {
		t.Error("the gateway has no preStop sleep")
	} else if sleep := time.Duration(ps.Sleep.Seconds) * time.Second; sleep != gp.cfg.Server.DrainDelay || sleep < 5*time.Second {
		t.Errorf("preStop sleep %s and server.drain_delay %s: want them equal, and 5s or more", sleep, gp.cfg.Server.DrainDelay)
	}

	// The model: its own Deployment and Service, reached by the gateway through the Service.
	model, ok := r.find("Deployment", "iris")
	if !ok {
		t.Fatal("no model Deployment iris")
	}
	modelLabels := model.Spec.Template.Metadata.Labels
	modelSvc, ok := r.find("Service", "iris")
	if !ok {
		t.Fatal("no model Service iris")
	}
	ups := gp.cfg.Services[0].AllUpstreams()
	svcPorts := map[string]bool{}
	for _, p := range modelSvc.Spec.Ports {
		svcPorts[fmt.Sprintf("http://%s:%d", modelSvc.Metadata.Name, p.Port)] = true
	}
	if len(ups) != 1 || !svcPorts[ups[0]] {
		t.Errorf("upstreams %q: want the model's Service, one of %v", ups, slices.Collect(maps.Keys(svcPorts)))
	}

	// The gateway's Service.
	gwSvc, ok := r.find("Service", gw.Metadata.Name)
	if !ok {
		t.Fatalf("no Service %s", gw.Metadata.Name)
	}
	if !matches(gwSvc.Spec.Selector.MatchLabels, gwLabels) {
		t.Error("the gateway's Service does not select the gateway's pods")
	}
	for _, p := range gwSvc.Spec.Ports {
		if got := containerPort(t, gp.gateway, p.TargetPort); got != port(t, gp.cfg.Listen) {
			t.Errorf("gateway Service port %d targets %v, not listen's port", p.Port, p.TargetPort)
		}
	}

	// Autoscaling and disruptions.
	hpas := r.all("HorizontalPodAutoscaler")
	if len(hpas) != 1 {
		t.Fatalf("%d HorizontalPodAutoscalers, want 1", len(hpas))
	}
	hpa := hpas[0]
	if hpa.APIVersion != "autoscaling/v2" || hpa.Spec.ScaleTargetRef.Kind != "Deployment" || hpa.Spec.ScaleTargetRef.Name != gw.Metadata.Name {
		t.Errorf("HPA %s scales %s %s", hpa.APIVersion, hpa.Spec.ScaleTargetRef.Kind, hpa.Spec.ScaleTargetRef.Name)
	}
	if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 2 || hpa.Spec.MaxReplicas <= *hpa.Spec.MinReplicas {
		t.Errorf("HPA replicas %v to %d, want from at least 2 to more", hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas)
	}
	pdbFound := false
	for _, pdb := range r.all("PodDisruptionBudget") {
		if matches(pdb.Spec.Selector.MatchLabels, gwLabels) {
			pdbFound = true
			if pdb.Spec.MinAvailable == nil {
				t.Errorf("PodDisruptionBudget %s has no minAvailable", pdb.Metadata.Name)
			}
		}
	}
	if !pdbFound {
		t.Error("no PodDisruptionBudget covers the gateways")
	}

	// Only the gateways reach the model.
	guarded := false
	for _, np := range r.all("NetworkPolicy") {
		if !matches(np.Spec.PodSelector.MatchLabels, modelLabels) {
			continue
		}
		guarded = slices.Contains(np.Spec.PolicyTypes, "Ingress")
		for _, rule := range np.Spec.Ingress {
			if len(rule.From) == 0 {
				t.Errorf("NetworkPolicy %s admits the model's pods from anywhere", np.Metadata.Name)
			}
			for _, peer := range rule.From {
				if peer.PodSelector == nil || peer.NamespaceSelector != nil || peer.IPBlock != nil || !matches(peer.PodSelector.MatchLabels, gwLabels) {
					t.Errorf("NetworkPolicy %s admits a peer other than the gateways: %+v", np.Metadata.Name, peer)
				}
				if matches(peer.PodSelector.MatchLabels, modelLabels) {
					t.Errorf("NetworkPolicy %s's peer selector also selects the model", np.Metadata.Name)
				}
			}
		}
	}
	if !guarded {
		t.Error("no NetworkPolicy restricts who reaches the model's pods")
	}
}

// The Secret both overlays read is made as the Kubernetes README says, with the keys they read.
func TestKubernetesREADMESecret(t *testing.T) {
	readme, err := os.ReadFile(repoPath("deploy", "kubernetes", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`kubectl create secret generic (\S+)((?:\s*\\\n\s*--from-literal=[a-z-]+=\S+)+)`).FindSubmatch(readme)
	if m == nil {
		t.Fatal("the README has no 'kubectl create secret generic … --from-literal=…' command")
	}
	var keys []string
	for _, k := range regexp.MustCompile(`--from-literal=([a-z-]+)=`).FindAllSubmatch(m[2], -1) {
		keys = append(keys, string(k[1]))
	}
	if string(m[1]) != "scoregate" || !slices.Equal(keys, []string{"redis-url", "admin-key"}) {
		t.Errorf("the README makes Secret %s with keys %q; the overlays read scoregate with redis-url and admin-key", m[1], keys)
	}
}
