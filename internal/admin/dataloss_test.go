package admin_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/authpipe/authpipe/internal/admin"
	"github.com/authpipe/authpipe/internal/auth0log"
)

// TestStatusShowsTheLastDataLoss: GET /api/v1/status reports the buffer's
// last data-loss incident as the buffer's metrics tell it.
func TestStatusShowsTheLastDataLoss(t *testing.T) {
	w := newWorld(t, worldOpts{static: true})
	ctx := t.Context()
	status := func() admin.TenantStatus {
		r := w.do(http.MethodGet, "/api/v1/status", staticToken, nil)
		require.Equal(t, http.StatusOK, r.status, r.body)
		var st admin.StatusResponse
		r.json(t, &st)
		require.Len(t, st.Tenants, 1)
		return st.Tenants[0]
	}
	ts := status()
	require.Zero(t, ts.DataLosses)
	require.Nil(t, ts.LastDataLoss)

	at := w.clock.Now().Add(-time.Minute).UTC().Truncate(time.Second)
	id := fmt.Sprintf("900%s%039d", at.Format("20060102150405"), 1)
	_, err := w.buf.Append(ctx, []auth0log.Log{{ID: id, Raw: []byte(`{"log_id":"` + id + `"}`)}}, id)
	require.NoError(t, err)
	require.NoError(t, w.buf.CheckLoss(ctx))
	require.NoError(t, w.rdb.Del(ctx, w.buf.Key("checkpoint")).Err())
	require.NoError(t, w.buf.CheckLoss(ctx))

	ts = status()
	require.EqualValues(t, 1, ts.DataLosses)
	require.NotNil(t, ts.LastDataLoss)
	require.Equal(t, []string{"checkpoint"}, ts.LastDataLoss.Found)
	require.WithinDuration(t, w.clock.Now(), ts.LastDataLoss.At, time.Second)
	require.NotNil(t, ts.LastDataLoss.RepollUntil)
	require.Equal(t, at, ts.LastDataLoss.RepollUntil.UTC())
	require.NotNil(t, ts.LastDataLoss.RepollFrom, "from the second of the first event not known delivered")
	require.Equal(t, at, ts.LastDataLoss.RepollFrom.UTC())
}
