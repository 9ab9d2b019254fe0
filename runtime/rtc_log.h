/*
** rtc_log.h -- a runtime compiler's log cut to fit an error message: whole
** when short, else its start (the first error) and its end (the last errors
** and the count), cut at line starts. Vendor-neutral (used by hipRTC; the
** same rule as NVRTC's messages in runtime/cuda/nvrtc.c).
*/
#ifndef FLA_RTC_LOG_H
#define FLA_RTC_LOG_H

#include <stddef.h>

void fla_rtc_format_log(char *dst, size_t cap, const char *log);

#endif
