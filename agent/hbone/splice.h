/* The zero-copy payload path of an HBONE connection on kernel TLS (engine "ktls-splice"):
 * app socket -> pipe -> kTLS socket with splice(2), so no payload byte of the app -> tunnel
 * direction enters user space. nghttp2 builds the DATA frame (NGHTTP2_DATA_FLAG_NO_COPY)
 * and hands its 9-byte header to h2splice_send(), which writes the header (MSG_MORE: it
 * shares a TLS record with the payload when it can) and then splices exactly the frame's
 * payload length. HTTP/2 is a byte stream, so where the kernel cuts records does not
 * matter; what matters is that a frame, once its header is on the wire, is finished with
 * exactly its length. Hence:
 *   - the length is never more than the app socket holds (FIONREAD) when the frame is made;
 *   - a frame the tunnel socket cannot take at once is resumed where it stopped (the state
 *     lives here, one frame per connection at a time: nghttp2 sends one frame at a time);
 *   - a stream that lets go of its socket mid-frame (reset, late rejection) hands it over:
 *     the frame is finished from it, then it is closed as the stream asked;
 *   - while a frame is in flight the connection reads nothing from the peer, so nghttp2
 *     cannot close the stream under it (it would drop the rest of the frame).
 * The tunnel -> app direction is copied (docs/architecture.md says why). */
#ifndef MOAT_HBONE_SPLICE_H
#define MOAT_HBONE_SPLICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct h2splice;

/* A pipe for one connection; NULL (errno set) when there is none to be had. */
struct h2splice *h2splice_new(void);
void h2splice_free(struct h2splice *sp);
/* A DATA frame is half sent: only the tunnel socket's writability matters now. */
bool h2splice_busy(const struct h2splice *sp);

/* How much of fd's payload can go into one frame now, at most max: > 0 bytes, 0 at EOF,
 * -EAGAIN when nothing is there yet, -errno on an error. */
ssize_t h2splice_available(int fd, size_t max);

/* Send (or resume) the DATA frame with header hd and length payload bytes from src to the
 * tunnel socket. *count (the stream's bytes to the peer) grows by what reached the tunnel.
 * 0: the frame is on the wire; 1: the tunnel socket is full, call again with the same frame
 * when it is writable; -1: failed, the connection cannot go on (h2splice_why says why). */
int h2splice_send(struct h2splice *sp, int tunnel, const uint8_t hd[9], size_t length, int src,
		  uint64_t *count);
const char *h2splice_why(const struct h2splice *sp);

/* The stream closes src (with RST when rst). true: a frame from src is in flight, which
 * now owns src and closes it once the frame is finished (the caller must not close it). */
bool h2splice_release(struct h2splice *sp, int src, bool rst);

#endif
