package engagelab

// Code is an EngageLab error code, the "code" field of an error body.
type Code int

// The error codes of the API spec's "Error Codes" table
// (/v1/codes, Custom OTP Code Delivery).
const (
	CodeInternal           Code = 1000 // HTTP 500: internal error
	CodeAuthFailed         Code = 2001 // HTTP 401: the correct token was not provided
	CodeAuthExpired        Code = 2002 // HTTP 401: the token has expired or has been disabled
	CodeNoPermission       Code = 2004 // HTTP 403: no permission to call this API
	CodeBadFormat          Code = 3001 // HTTP 400: invalid request parameter format
	CodeBadParams          Code = 3002 // HTTP 400: invalid request parameters
	CodeBusinessValidation Code = 3003 // HTTP 400: business validation failed
	CodeFrequencyLimit     Code = 3004 // HTTP 400: same template, same user, within the code's validity
	CodeNotFound           Code = 4001 // HTTP 400: the resource (template…) does not exist
	CodeSendFailed         Code = 5001 // HTTP 400: sending failed (general/other)
	CodeInvalidPhone       Code = 5011 // HTTP 400: invalid phone number format
	CodeUnreachable        Code = 5012 // HTTP 400: target unreachable
	CodeBlacklisted        Code = 5013 // HTTP 400: number has been blacklisted
	CodeContentRejected    Code = 5014 // HTTP 400: content does not comply with specifications
	CodeIntercepted        Code = 5015 // HTTP 400: message intercepted/rejected
	CodeSendingError       Code = 5016 // HTTP 400: internal sending error
	CodeNoChinaPermission  Code = 5017 // HTTP 400: no sending permission for mainland China
	CodePhoneMalfunction   Code = 5018 // HTTP 400: phone powered off/service suspended
	CodeUnsubscribed       Code = 5019 // HTTP 400: user has unsubscribed
	CodeNotRegistered      Code = 5020 // HTTP 400: number not registered/invalid number
)

// MinCode and MaxCode bound the form of an EngageLab error code: four digits.
const (
	MinCode Code = 1000
	MaxCode Code = 9999
)

// CodeInfo is one row of the spec's error code table.
type CodeInfo struct {
	Code Code
	// HTTPStatus is the HTTP status the API answers with the code.
	HTTPStatus int
	// Meaning is the spec's description of the code.
	Meaning string
}

// Codes returns the spec's error code table, in the spec's order. The slice
// is new on each call; callers may keep or change it.
func Codes() []CodeInfo {
	return []CodeInfo{
		{CodeInternal, 500, "Internal error"},
		{CodeAuthFailed, 401, "Authentication failed. The correct token was not provided."},
		{CodeAuthExpired, 401, "Authentication failed. The token has expired or has been disabled."},
		{CodeNoPermission, 403, "No permission to call this API"},
		{CodeBadFormat, 400, "Invalid request parameter format. Please check whether the JSON content matches the required parameter format."},
		{CodeBadParams, 400, "Invalid request parameters. Please check whether the request parameters meet the requirements."},
		{CodeBusinessValidation, 400, "Invalid request parameters. Related business validation failed. Refer to the error description in the message field for details."},
		{CodeFrequencyLimit, 400, "Frequency limit exceeded. For the same template and the same target user, delivery cannot be made again within the verification code validity period."},
		{CodeNotFound, 400, "The related resource does not exist, such as using a non-existent template when sending a template message."},
		{CodeSendFailed, 400, "Sending failed (general/other)"},
		{CodeInvalidPhone, 400, "Invalid phone number format"},
		{CodeUnreachable, 400, "Target unreachable"},
		{CodeBlacklisted, 400, "Number has been blacklisted"},
		{CodeContentRejected, 400, "Content does not comply with specifications"},
		{CodeIntercepted, 400, "Message intercepted/rejected"},
		{CodeSendingError, 400, "Internal sending error"},
		{CodeNoChinaPermission, 400, "No sending permission for mainland China"},
		{CodePhoneMalfunction, 400, "Phone malfunction (powered off/service suspended)"},
		{CodeUnsubscribed, 400, "User has unsubscribed"},
		{CodeNotRegistered, 400, "Number not registered/invalid number"},
	}
}

// Info returns c's row of the spec's table; ok is false for a code the
// spec does not list (0 included).
func (c Code) Info() (info CodeInfo, ok bool) {
	for _, row := range Codes() {
		if row.Code == c {
			return row, true
		}
	}
	return CodeInfo{}, false
}

// Known reports whether the spec lists c.
func (c Code) Known() bool {
	_, ok := c.Info()
	return ok
}

// Valid reports whether c has the form of an EngageLab error code (four
// digits), listed in the spec or not.
func (c Code) Valid() bool { return c >= MinCode && c <= MaxCode }

// Retryable reports whether the code itself says "try again later": the
// 1000 class (server-side errors).
func (c Code) Retryable() bool { return c >= 1000 && c <= 1999 }
