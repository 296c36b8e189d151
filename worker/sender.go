package worker

import (
	"context"
	"errors"

	"github.com/otpq/otpq/internal/engagelab"
)

// Sender makes one provider call. The worker uses the EngageLab client
// unless Config.Sender sets another (a test double, a different gateway).
// Send must not retry on its own: the worker decides retries (see the
// package documentation). An error a custom Sender returns is retried
// later, counting against MaxRetry, unless it wraps ErrRejected, which
// dead-letters the task at once with the error's text as the reason. The
// error text is stored and logged, so it must never contain the code.
type Sender interface {
	Send(ctx context.Context, req SendRequest) (*SendResponse, error)
}

// ErrRejected, wrapped by an error of a custom Sender, says the provider
// refused the send for good: the task is dead-lettered without retrying.
var ErrRejected = errors.New("send rejected")

// SendRequest is one send: deliver Code to To with the template TemplateID.
// Code is the secret; it must go to the provider and nowhere else.
type SendRequest struct {
	// To is an E.164 phone number or an e-mail address.
	To string
	// Code is the one-time code.
	Code string
	// TemplateID, Language and Params select and fill the template.
	TemplateID string
	Language   string
	Params     map[string]string
}

// SendResponse is the provider's answer to a send it accepted.
type SendResponse struct {
	// MessageID is the provider's ID of the message, stored as the task's
	// result and used to match delivery receipts.
	MessageID string
	// SendChannel is the channel the provider chose (sms, email, …).
	SendChannel string
	// Unconfirmed, when not empty, says why this answer does not confirm
	// the send although the provider took it (no message ID): the task is
	// completed as accepted_unconfirmed and never sent again.
	Unconfirmed string
}

// engagelabSender adapts the EngageLab client to Sender.
type engagelabSender struct{ c *engagelab.Client }

func (s engagelabSender) Send(ctx context.Context, req SendRequest) (*SendResponse, error) {
	resp, err := s.c.Send(ctx, engagelab.Request{To: req.To, Code: req.Code, Template: engagelab.Template{
		ID: req.TemplateID, Language: req.Language, Params: req.Params,
	}})
	if err != nil {
		return nil, err
	}
	return &SendResponse{MessageID: resp.MessageID, SendChannel: resp.SendChannel, Unconfirmed: resp.Unconfirmed}, nil
}
