package httpapi

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/tokenbroker/tokenbroker/audit"
	"github.com/tokenbroker/tokenbroker/webhook"
)

type webhookHandlers struct {
	h *handlers
	s *webhook.Service
}

func (w *webhookHandlers) create(c *gin.Context) {
	who, ok := w.h.mustCaller(c)
	if !ok {
		return
	}
	var req webhook.CreateRequest
	if !readJSON(c, &req) {
		return
	}
	ep, err := w.s.Create(c.Request.Context(), who, req)
	w.h.record(c, who, audit.Record{Action: audit.ActionWebhookCreate, WebhookID: ep.ID}, err)
	if err != nil {
		writeError(c, err)
		return
	}
	c.Header("Cache-Control", "no-store") // the secret is in this answer
	c.JSON(http.StatusCreated, ep)
}

func (w *webhookHandlers) list(c *gin.Context) {
	who, ok := w.h.mustCaller(c)
	if !ok {
		return
	}
	eps, err := w.s.List(c.Request.Context(), who)
	if err != nil {
		writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, eps)
}

func (w *webhookHandlers) delete(c *gin.Context) {
	who, ok := w.h.mustCaller(c)
	if !ok {
		return
	}
	err := w.s.Delete(c.Request.Context(), who, c.Param("id"))
	w.h.record(c, who, audit.Record{Action: audit.ActionWebhookDelete, WebhookID: c.Param("id")}, err)
	if err != nil {
		writeError(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

func (w *webhookHandlers) rotate(c *gin.Context) {
	who, ok := w.h.mustCaller(c)
	if !ok {
		return
	}
	ep, err := w.s.Rotate(c.Request.Context(), who, c.Param("id"))
	w.h.record(c, who, audit.Record{Action: audit.ActionWebhookRotate, WebhookID: c.Param("id")}, err)
	if err != nil {
		writeError(c, err)
		return
	}
	c.Header("Cache-Control", "no-store")
	c.JSON(http.StatusOK, ep)
}

func (w *webhookHandlers) deliveries(c *gin.Context) {
	who, ok := w.h.mustCaller(c)
	if !ok {
		return
	}
	limit, ok := parseLimit(c)
	if !ok {
		return
	}
	as, err := w.s.Deliveries(c.Request.Context(), who, c.Param("id"), limit)
	if err != nil {
		writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, gin.H{"deliveries": as})
}
