package proxy

import (
	"testing"

	"github.com/valyala/fasthttp"
)

// TestCanonicalHeaderKeys checks the keys given to fasthttp's canonical-key methods: each is its
// name as fasthttp normalises it, and the names the request core asks fastHeader for are already
// in that form (fastHeader passes them on as they are).
func TestCanonicalHeaderKeys(t *testing.T) {
	keys := map[string][]byte{
		"Connection":          keyConnection,
		HeaderRequestID:       keyRequestID,
		HeaderMSRequestID:     keyMSRequestID,
		HeaderClientRequestID: keyClientRequestID,
		headerTraceresponse:   keyTraceresponse,
		"X-Forwarded-For":     keyXForwardedFor,
		"X-Forwarded-Proto":   keyXForwardedProto,
		"X-Forwarded-Host":    keyXForwardedHost,
		headerTraceparent:     keyTraceparent,
		headerTracestate:      keyTracestate,
		headerBaggage:         keyBaggage,
	}
	for name, key := range keys {
		if string(key) != name {
			t.Errorf("key %q for %q: the name is not in canonical form", key, name)
		}
	}
	if got := string(keyDeployment); got != "Azureml-Model-Deployment" {
		t.Errorf("deployment key %q", got)
	}
	for i, name := range hopHeaders {
		if string(hopHeaderKeys[i]) != string(fasthttp.AppendNormalizedHeaderKey(nil, name)) {
			t.Errorf("hop header key %q for %q", hopHeaderKeys[i], name)
		}
	}
	for i, name := range removedRequestHeaders {
		if string(removedRequestKeys[i]) != string(fasthttp.AppendNormalizedHeaderKey(nil, name)) {
			t.Errorf("removed header key %q for %q", removedRequestKeys[i], name)
		}
	}
	for _, name := range []string{"Authorization", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", headerTraceparent, headerTracestate} {
		if got := string(fasthttp.AppendNormalizedHeaderKey(nil, name)); got != name {
			t.Errorf("fastHeader is asked for %q, whose canonical form is %q", name, got)
		}
	}
}
