package authntest

import (
	"encoding/base64"
	"encoding/json"
	"strings"
)

// Response is a credential as a browser sends it (the JSON of a
// PublicKeyCredential), its base64url fields decoded: tests use it to tell
// what a card signed or attested, independently of the server's parser.
type Response struct {
	RawID    B64 `json:"rawId"`
	Response struct {
		ClientDataJSON    B64 `json:"clientDataJSON"`
		AuthenticatorData B64 `json:"authenticatorData"`
		Signature         B64 `json:"signature"`
		UserHandle        B64 `json:"userHandle"`
		AttestationObject B64 `json:"attestationObject"`
	} `json:"response"`
}

// B64 is a base64url field (padding tolerated); null leaves it empty.
type B64 []byte

// UnmarshalJSON decodes a base64url string.
func (b *B64) UnmarshalJSON(data []byte) error {
	if string(data) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return err
	}
	out, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	*b = out
	return err
}
