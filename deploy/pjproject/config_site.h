/*
 * pjproject build-time limits for cozmox-router in production.
 *
 * Copied to pjlib/include/pj/config_site.h before ./configure by the
 * Dockerfile's pjsua2-source stage. The PyPI pjsua2-python wheel keeps
 * pjproject's defaults instead: 4 calls, 8 accounts, a 4000-byte packet
 * buffer and a select() ioqueue of 64 sockets.
 */

/* Call slots. A bridged call takes two (caller and runtime leg), and the
 * router keeps one slot free for its own 503, so 1024 slots carry about
 * 511 bridged calls: a little more than maxConcurrentCalls 500. */
#define PJSUA_MAX_CALLS                 1024

/* Accounts: the router's own, plus one per registering trunk. */
#define PJSUA_MAX_ACC                   128

/* Carriers send INVITEs of several kB over UDP (long SDP, many X- headers).
 * A datagram longer than the buffer is cut. */
#define PJSIP_MAX_PKT_LEN               16000

/* Sockets of the ioqueue: two per call leg for RTP and RTCP, plus the SIP
 * transports. ./configure --enable-epoll selects epoll, which has no
 * FD_SETSIZE limit of its own. */
#define PJ_IOQUEUE_MAX_HANDLES          4096

/* Conference bridge ports: one per answered leg with audio, and prompts. */
#define PJSUA_MAX_CONF_PORTS            (PJSUA_MAX_CALLS * 2 + 16)

/* Transactions and dialogs in flight at once: a call has one dialog and
 * a few transactions, a bridged call twice that. */
#define PJSIP_MAX_TSX_COUNT             (16 * 1024 - 1)
#define PJSIP_MAX_DIALOG_COUNT          (16 * 1024 - 1)

/* A container has no sound device, and the router uses pjsua2's null
 * audio device. */
#define PJMEDIA_HAS_VIDEO               0
#define PJMEDIA_AUDIO_DEV_HAS_ALSA      0
