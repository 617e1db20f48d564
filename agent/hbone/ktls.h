#ifndef MOAT_HBONE_KTLS_H
#define MOAT_HBONE_KTLS_H

#include <stdbool.h>
#include <stddef.h>

/* Does this kernel take TCP_ULP "tls"? why says what was seen either way. */
bool ktls_probe(char *why, size_t len);

#endif
