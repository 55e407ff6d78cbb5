/* device.h — CUDA device discovery (C interface; safe to call on machines without a GPU). */
#ifndef SERVAL_KN_DEVICE_H
#define SERVAL_KN_DEVICE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Number of usable CUDA devices; 0 when there is no GPU or no driver. */
int kn_device_count(void);
/* Writes device `dev`'s name into buf (NUL-terminated); returns 0, or -1 on failure. */
int kn_device_name(int dev, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif

#endif
