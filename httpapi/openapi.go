package httpapi

import (
	_ "embed"
	"net/http"

	"github.com/opgate/opgate/authn"
)

// openapiDoc is the OpenAPI 3.1 description of every route, kept by hand
// beside the code; TestOpenAPIMatchesRoutes holds the two together.
//
//go:embed openapi.json
var openapiDoc []byte

func (s *Server) openapi(w http.ResponseWriter, _ *http.Request, _ authn.Principal) error {
	w.Header().Set("Content-Type", "application/json")
	_, err := w.Write(openapiDoc)
	return err
}
