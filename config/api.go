package config

// Service APIs (services[].api).
const (
	// APIPlain is a model whose API the gateway does not read: requests and answers pass as
	// they are.
	APIPlain = "plain"
	// APIOpenAI is an OpenAI-compatible language model (vLLM, TGI, llama.cpp's server, Ollama,
	// Triton's OpenAI front end, Azure's model endpoints): the gateway reads its requests and
	// answers for the token usage.
	APIOpenAI = "openai"
)

func (s *Service) applyAPIDefaults() {
	setDefault(&s.API, APIPlain)
}

// validateAPI checks services[i].api.
func validateAPI(p string, svc Service, add func(path, format string, args ...any)) {
	switch svc.API {
	case APIPlain:
	case APIOpenAI:
		if svc.Protocol == ProtocolGRPC {
			add(p+".api", "openai is an HTTP API; not with protocol grpc")
		}
	default:
		add(p+".api", "%q is not one of %s, %s", svc.API, APIPlain, APIOpenAI)
	}
}
