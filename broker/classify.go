package broker

import (
	"errors"
	"net/http"
	"strings"

	"golang.org/x/oauth2"
)

// ClassifyTokenError sorts an error from a vendor's token endpoint into the
// fixed set of classes that VENDORS.md "Classifying a failed refresh" names.
// It is the only place that reads token-endpoint answers; the refresh
// operation turns ClassAmbiguous into dead or client_config and detects lost
// races (which need the store, not the answer).
func ClassifyTokenError(err error) ErrorClass {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		// Transport failures, timeouts, cancelled contexts and answers x/oauth2
		// could not parse (HTML from a hibernating instance, a 2xx without
		// access_token) are all worth retrying.
		return ClassTransient
	}
	status := 0
	if re.Response != nil {
		status = re.Response.StatusCode
	}
	code := re.ErrorCode
	switch {
	case code == "invalid_grant":
		return ClassDead
	case code == "invalid_client" || code == "unauthorized_client":
		return ClassClientConfig
	case status == http.StatusUnauthorized && code == "server_error" &&
		strings.EqualFold(re.ErrorDescription, "access_denied"):
		// ServiceNow: the same body for a dead token and for a broken client.
		return ClassAmbiguous
	case status == http.StatusUnauthorized && code == "access_denied":
		// Atlassian: bad client credentials.
		return ClassClientConfig
	}
	return ClassTransient
}
