/*
** rtc_log.c -- see rtc_log.h.
*/
#include "rtc_log.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

void fla_rtc_format_log(char *dst, size_t cap, const char *log) {
  enum { WHOLE = 1500, HEAD = 400, TAIL = 1100 };
  size_t n = strlen(log);
  while (n && isspace((unsigned char)log[n - 1])) n--;
  if (n <= WHOLE) {
    snprintf(dst, cap, "%.*s", (int)n, log);
    return;
  }
  size_t head = HEAD;
  const char *nl = memchr(log + HEAD / 2, '\n', HEAD / 2);
  if (nl) head = (size_t)(nl - log);
  size_t tail_start = n - TAIL;
  nl = memchr(log + tail_start, '\n', 200);
  if (nl) tail_start = (size_t)(nl - log) + 1;
  snprintf(dst, cap, "%.*s\n[... %zu bytes of the log left out ...]\n%.*s", (int)head, log,
           tail_start - head, (int)(n - tail_start), log + tail_start);
}
