package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/scoregate/scoregate/internal/chatmodel"
)

// Issue 22: `quickstart -model chat` serves the sample language model behind the service demo.
// With the printed key, a client that uses the printed base_url as an OpenAI client does gets
// chat completions through the gateway, streamed and not, with the model's exact usage; the
// printed curl line works; without the key the answer is 401.
func TestQuickstartChat(t *testing.T) {
	dir := t.TempDir()
	p := start(t, nil, "quickstart", "-model", "chat", "-listen", "127.0.0.1:0", "-admin-listen", "127.0.0.1:0", "-dir", filepath.Join(dir, "qs"))
	out := p.stdout.String()
	find := func(re string) string {
		t.Helper()
		m := regexp.MustCompile(re).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no %s in:\n%s", re, out)
		}
		return m[1]
	}
	baseURL := find(`base_url     (http://\S+/api/v1/service/demo/v1) `)
	key := find(`primary key  (\S+)`)
	model := find(`model        (\S+), `)
	if model != chatmodel.DefaultModelName {
		t.Errorf("the banner names the model %q", model)
	}

	const system, user = "Answer in one sentence.", "What did Alice find on the little glass table?"
	body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"system","content":%q},{"role":"user","content":%q}]`, model, system, user)
	wantPrompt := chatmodel.Count(system) + chatmodel.Count(user) + 2*chatmodel.MessageOverhead
	call := func(body, key string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest("POST", baseURL+"/chat/completions", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, b
	}

	resp, b := call(body+`}`, key)
	var answer struct {
		Model   string `json:"model"`
		Choices []struct {
			Message struct {
				Role, Content string
			} `json:"message"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Usage *struct {
			PromptTokens     int `json:"prompt_tokens"`
			CompletionTokens int `json:"completion_tokens"`
			TotalTokens      int `json:"total_tokens"`
		} `json:"usage"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(b, &answer) != nil || len(answer.Choices) != 1 || answer.Usage == nil {
		t.Fatalf("chat completion: %d %s", resp.StatusCode, b)
	}
	text := answer.Choices[0].Message.Content
	if u := answer.Usage; text == "" || u.PromptTokens != wantPrompt || u.CompletionTokens != chatmodel.Count(text) ||
		u.TotalTokens != u.PromptTokens+u.CompletionTokens {
		t.Errorf("answer %q with usage %+v; want prompt_tokens %d, completion_tokens %d", text, *u, wantPrompt, chatmodel.Count(text))
	}

	// Streamed, with and without the usage chunk: the same text as the answer above (the model is
	// deterministic), a token a chunk, and a usage chunk only when the client asks for one.
	for _, includeUsage := range []bool{false, true} {
		t.Run(fmt.Sprintf("streamed, include_usage %v", includeUsage), func(t *testing.T) {
			streamBody := body + `,"stream":true}`
			if includeUsage {
				streamBody = body + `,"stream":true,"stream_options":{"include_usage":true}}`
			}
			resp, b := call(streamBody, key)
			if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
				t.Fatalf("%d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
			}
			events := strings.Split(strings.TrimSuffix(string(b), "\n\n"), "\n\n")
			if events[len(events)-1] != "data: [DONE]" {
				t.Fatalf("the stream does not end with [DONE]:\n%s", b)
			}
			var streamed strings.Builder
			usageChunks := 0
			for _, e := range events[:len(events)-1] {
				data, ok := strings.CutPrefix(e, "data: ")
				if !ok {
					t.Fatalf("event %q", e)
				}
				var raw map[string]json.RawMessage
				var chunk struct {
					Choices []struct {
						Delta struct {
							Content string `json:"content"`
						} `json:"delta"`
					} `json:"choices"`
					Usage *struct {
						PromptTokens     int `json:"prompt_tokens"`
						CompletionTokens int `json:"completion_tokens"`
					} `json:"usage"`
				}
				if json.Unmarshal([]byte(data), &raw) != nil || json.Unmarshal([]byte(data), &chunk) != nil {
					t.Fatalf("chunk %s", data)
				}
				if _, has := raw["usage"]; has != includeUsage {
					t.Errorf("chunk %s: usage present %v, asked for %v", data, has, includeUsage)
				}
				if chunk.Usage != nil {
					usageChunks++
					if len(chunk.Choices) != 0 || chunk.Usage.PromptTokens != wantPrompt || chunk.Usage.CompletionTokens != answer.Usage.CompletionTokens {
						t.Errorf("usage chunk %s; want prompt_tokens %d, completion_tokens %d", data, wantPrompt, answer.Usage.CompletionTokens)
					}
					continue
				}
				if c := chunk.Choices[0].Delta.Content; c != "" && chatmodel.Count(c) != 1 {
					t.Errorf("chunk %q is not one token", c)
				}
				streamed.WriteString(chunk.Choices[0].Delta.Content)
			}
			if want := map[bool]int{false: 0, true: 1}[includeUsage]; usageChunks != want {
				t.Errorf("%d usage chunks, want %d", usageChunks, want)
			}
			if streamed.String() != text {
				t.Errorf("streamed %q, not streamed %q", streamed.String(), text)
			}
		})
	}

	if resp, b := call(body+`}`, ""); resp.StatusCode != 401 {
		t.Errorf("without the key: %d %s", resp.StatusCode, b)
	}

	// The printed curl line.
	curlLine := regexp.MustCompile(`(?s)curl .*?/api/v1/service/demo/v1/chat/completions`).FindString(out)
	if curlLine == "" {
		t.Fatalf("no curl line in:\n%s", out)
	}
	if _, err := exec.LookPath("curl"); err == nil {
		got, err := exec.Command("sh", "-c", strings.ReplaceAll(curlLine, "\\\n", " ")).CombinedOutput()
		var a struct {
			Choices []struct{ Message struct{ Content string } }
			Usage   struct {
				PromptTokens int `json:"prompt_tokens"`
			}
		}
		if err != nil || json.Unmarshal(got, &a) != nil || len(a.Choices) != 1 || a.Choices[0].Message.Content == "" ||
			a.Usage.PromptTokens != chatmodel.Count(chatExample)+chatmodel.MessageOverhead {
			t.Errorf("%s: %v\n%s", curlLine, err, got)
		}
	}
	if code := p.stop(t, syscall.SIGINT); code != 0 {
		t.Fatalf("quickstart exit %d after Ctrl-C\n%s", code, p.stderr)
	}
}

func TestQuickstartUnknownModel(t *testing.T) {
	_, errOut, code := runCLI(t, nil, "quickstart", "-model", "gpt", "-listen", "127.0.0.1:0", "-admin-listen", "127.0.0.1:0", "-dir", t.TempDir())
	if code != 2 || !strings.Contains(errOut, "-model must be score or chat") {
		t.Errorf("exit %d: %s", code, errOut)
	}
}
