package smart

import "errors"

// OAuth 2.0 error codes (RFC 6749 section 5.2, RFC 6750 section 3.1) that
// this package returns in an *OAuthError.
const (
	CodeInvalidRequest = "invalid_request"
	CodeInvalidClient  = "invalid_client"
	CodeInvalidScope   = "invalid_scope"
	CodeInvalidToken   = "invalid_token"
)

// OAuthError is a rejection that the token endpoint (or the resource server,
// for CodeInvalidToken) reports to the client as
// {"error": Code, "error_description": Description}. Description says what
// is wrong with the request; it never contains key material or secrets, so it
// is safe to send back.
type OAuthError struct {
	Code        string
	Description string
	// Err, when set, is the underlying cause (a failed jwks_url fetch, for
	// example), for the server's log. It is not part of Error() and is
	// never sent to the client: it may name internal addresses.
	Err error
}

func (e *OAuthError) Error() string {
	return "smart: " + e.Code + ": " + e.Description
}

// Unwrap returns the underlying cause, if any.
func (e *OAuthError) Unwrap() error { return e.Err }

func invalidClient(desc string) *OAuthError {
	return &OAuthError{Code: CodeInvalidClient, Description: desc}
}

func invalidScope(desc string) *OAuthError {
	return &OAuthError{Code: CodeInvalidScope, Description: desc}
}

func invalidToken(desc string) *OAuthError {
	return &OAuthError{Code: CodeInvalidToken, Description: desc}
}

// Errors that are not a client's fault: the caller should answer 500 and log
// them, not report them as an OAuth error.
var (
	// ErrClosed is returned by a ReplayFile after Close.
	ErrClosed = errors.New("smart: closed")
	// ErrNoKeys is returned when a Signer has no key to sign with.
	ErrNoKeys = errors.New("smart: no signing key")
)
