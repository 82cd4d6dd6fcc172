/* hmi-demo: the HMI demo app. Draws one frame with EGL + GLES 2 and keeps it shown.
 *
 *   hmi-demo [--hold SECONDS]   a Wayland window (xdg-shell) on $WAYLAND_DISPLAY
 *   hmi-demo --offscreen        EGL without a display (Mesa's surfaceless platform):
 *                               renders the same picture into a texture and prints
 *                               the renderer and the pixels read back
 *
 * The picture, which the screenshot test checks: the left half blue (#2060c0), the right
 * half orange (#e08010), and a green (#10c040) triangle over the middle. The driver comes
 * from the board's GPU driver extension (glvnd finds its vendor library through
 * __EGL_VENDOR_LIBRARY_DIRS); the runtime carries only glvnd's dispatch libraries.
 * Every wait is bounded: no compositor reply within 5 s is an error.
 */
#define _GNU_SOURCE
#include <EGL/egl.h>
#include <EGL/eglext.h>
#include <GLES2/gl2.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <wayland-client.h>
#include <wayland-egl.h>
#include "xdg-shell-client-protocol.h"

#ifndef EGL_PLATFORM_SURFACELESS_MESA
#define EGL_PLATFORM_SURFACELESS_MESA 0x31DD
#endif

static const char *VS =
    "attribute vec2 pos;\n"
    "void main() { gl_Position = vec4(pos, 0.0, 1.0); }\n";
static const char *FS =
    "precision mediump float;\n"
    "void main() { gl_FragColor = vec4(16.0/255.0, 192.0/255.0, 64.0/255.0, 1.0); }\n";

static int die(const char *what) {
    fprintf(stderr, "hmi-demo: %s (EGL error 0x%x)\n", what, eglGetError());
    exit(1);
}

static GLuint shader(GLenum type, const char *src) {
    GLuint s = glCreateShader(type);
    glShaderSource(s, 1, &src, NULL);
    glCompileShader(s);
    GLint ok = 0;
    glGetShaderiv(s, GL_COMPILE_STATUS, &ok);
    if (!ok) die("shader does not compile");
    return s;
}

/* The picture, in a w x h viewport. */
static void draw(int w, int h) {
    glViewport(0, 0, w, h);
    glDisable(GL_SCISSOR_TEST);
    glClearColor(0x20 / 255.0f, 0x60 / 255.0f, 0xc0 / 255.0f, 1.0f);
    glClear(GL_COLOR_BUFFER_BIT);
    glEnable(GL_SCISSOR_TEST);
    glScissor(w / 2, 0, w - w / 2, h);
    glClearColor(0xe0 / 255.0f, 0x80 / 255.0f, 0x10 / 255.0f, 1.0f);
    glClear(GL_COLOR_BUFFER_BIT);
    glDisable(GL_SCISSOR_TEST);
    GLuint p = glCreateProgram();
    glAttachShader(p, shader(GL_VERTEX_SHADER, VS));
    glAttachShader(p, shader(GL_FRAGMENT_SHADER, FS));
    glBindAttribLocation(p, 0, "pos");
    glLinkProgram(p);
    GLint ok = 0;
    glGetProgramiv(p, GL_LINK_STATUS, &ok);
    if (!ok) die("program does not link");
    glUseProgram(p);
    static const GLfloat tri[] = {-0.4f, -0.5f, 0.4f, -0.5f, 0.0f, 0.5f};
    glVertexAttribPointer(0, 2, GL_FLOAT, GL_FALSE, 0, tri);
    glEnableVertexAttribArray(0);
    glDrawArrays(GL_TRIANGLES, 0, 3);
    if (glGetError() != GL_NO_ERROR) die("drawing failed");
}

static EGLContext context(EGLDisplay d, EGLConfig *cfg, EGLint surface_type) {
    EGLint major, minor, n = 0;
    if (!eglInitialize(d, &major, &minor)) die("eglInitialize failed");
    /* With an alpha channel: Mesa 22.3's software path presents an alpha-less (XRGB)
     * window as blank to weston's pixman renderer; the picture is opaque either way. */
    const EGLint attrs[] = {EGL_SURFACE_TYPE, surface_type, EGL_RED_SIZE, 8, EGL_GREEN_SIZE, 8,
                            EGL_BLUE_SIZE, 8, EGL_ALPHA_SIZE, 8, EGL_RENDERABLE_TYPE,
                            EGL_OPENGL_ES2_BIT, EGL_NONE};
    if (!eglChooseConfig(d, attrs, cfg, 1, &n) || n < 1) die("no EGL config");
    if (!eglBindAPI(EGL_OPENGL_ES_API)) die("no GLES API");
    const EGLint ctx[] = {EGL_CONTEXT_CLIENT_VERSION, 2, EGL_NONE};
    EGLContext c = eglCreateContext(d, *cfg, EGL_NO_CONTEXT, ctx);
    if (c == EGL_NO_CONTEXT) die("eglCreateContext failed");
    return c;
}

static void hex_at(int x, int y, char out[7]) {
    unsigned char px[4] = {0};
    glReadPixels(x, y, 1, 1, GL_RGBA, GL_UNSIGNED_BYTE, px);
    snprintf(out, 7, "%02x%02x%02x", px[0], px[1], px[2]);
}

static int offscreen(void) {
    EGLDisplay d = eglGetPlatformDisplay(EGL_PLATFORM_SURFACELESS_MESA, EGL_DEFAULT_DISPLAY, NULL);
    if (d == EGL_NO_DISPLAY) die("no surfaceless EGL display (is a GPU driver extension mounted?)");
    EGLConfig cfg;
    EGLContext c = context(d, &cfg, EGL_PBUFFER_BIT);
    if (!eglMakeCurrent(d, EGL_NO_SURFACE, EGL_NO_SURFACE, c)) die("eglMakeCurrent failed");
    const int w = 64, h = 48;
    GLuint tex, fbo;
    glGenTextures(1, &tex);
    glBindTexture(GL_TEXTURE_2D, tex);
    glTexImage2D(GL_TEXTURE_2D, 0, GL_RGBA, w, h, 0, GL_RGBA, GL_UNSIGNED_BYTE, NULL);
    glGenFramebuffers(1, &fbo);
    glBindFramebuffer(GL_FRAMEBUFFER, fbo);
    glFramebufferTexture2D(GL_FRAMEBUFFER, GL_COLOR_ATTACHMENT0, GL_TEXTURE_2D, tex, 0);
    if (glCheckFramebufferStatus(GL_FRAMEBUFFER) != GL_FRAMEBUFFER_COMPLETE) die("incomplete framebuffer");
    draw(w, h);
    glFinish();
    char left[7], right[7], mid[7];
    hex_at(w / 8, h - 2, left);
    hex_at(w - w / 8, h - 2, right);
    hex_at(w / 2, h / 2, mid);
    printf("renderer=%s left=%s right=%s middle=%s\n", (const char *)glGetString(GL_RENDERER),
           left, right, mid);
    return 0;
}

struct win {
    struct wl_compositor *compositor;
    struct xdg_wm_base *wm;
    int width, height, configured, closed;
};

static void wm_ping(void *data, struct xdg_wm_base *wm, uint32_t serial) {
    (void)data;
    xdg_wm_base_pong(wm, serial);
}
static const struct xdg_wm_base_listener wm_listener = {wm_ping};

static void global(void *data, struct wl_registry *r, uint32_t name, const char *iface,
                   uint32_t version) {
    struct win *w = data;
    (void)version;
    if (strcmp(iface, wl_compositor_interface.name) == 0)
        w->compositor = wl_registry_bind(r, name, &wl_compositor_interface, 4);
    else if (strcmp(iface, xdg_wm_base_interface.name) == 0) {
        w->wm = wl_registry_bind(r, name, &xdg_wm_base_interface, 1);
        xdg_wm_base_add_listener(w->wm, &wm_listener, w);
    }
}
static void global_remove(void *data, struct wl_registry *r, uint32_t name) {
    (void)data, (void)r, (void)name;
}
static const struct wl_registry_listener registry_listener = {global, global_remove};

static void surface_configure(void *data, struct xdg_surface *s, uint32_t serial) {
    struct win *w = data;
    xdg_surface_ack_configure(s, serial);
    w->configured = 1;
}
static const struct xdg_surface_listener surface_listener = {surface_configure};

static void toplevel_configure(void *data, struct xdg_toplevel *t, int32_t width, int32_t height,
                               struct wl_array *states) {
    struct win *w = data;
    (void)t, (void)states;
    if (width > 0 && height > 0) w->width = width, w->height = height;
}
static void toplevel_close(void *data, struct xdg_toplevel *t) {
    (void)t;
    ((struct win *)data)->closed = 1;
}
static const struct xdg_toplevel_listener toplevel_listener = {toplevel_configure, toplevel_close};

static void frame_done(void *data, struct wl_callback *cb, uint32_t t) {
    (void)t;
    *(int *)data = 1;
    wl_callback_destroy(cb);
}
static const struct wl_callback_listener frame_listener = {frame_done};

/* Dispatches events for at most `ms` milliseconds; -1 when the connection broke. */
static int dispatch_for(struct wl_display *dpy, int ms) {
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        while (wl_display_prepare_read(dpy) != 0)
            if (wl_display_dispatch_pending(dpy) < 0) return -1;
        if (wl_display_flush(dpy) < 0) { wl_display_cancel_read(dpy); return -1; }
        clock_gettime(CLOCK_MONOTONIC, &t);
        long left = ms - ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
        if (left <= 0) { wl_display_cancel_read(dpy); return 0; }
        struct pollfd p = {wl_display_get_fd(dpy), POLLIN, 0};
        if (poll(&p, 1, (int)left) > 0) {
            if (wl_display_read_events(dpy) < 0) return -1;
        } else {
            wl_display_cancel_read(dpy);
        }
        if (wl_display_dispatch_pending(dpy) < 0) return -1;
    }
}

static int window(int hold) {
    struct wl_display *dpy = wl_display_connect(NULL);
    if (!dpy) die("cannot connect to the Wayland compositor ($WAYLAND_DISPLAY)");
    struct win w = {0};
    w.width = 640, w.height = 480;
    struct wl_registry *reg = wl_display_get_registry(dpy);
    wl_registry_add_listener(reg, &registry_listener, &w);
    wl_display_roundtrip(dpy);
    if (!w.compositor || !w.wm) die("the compositor offers no wl_compositor or xdg_wm_base");
    struct wl_surface *surface = wl_compositor_create_surface(w.compositor);
    struct xdg_surface *xs = xdg_wm_base_get_xdg_surface(w.wm, surface);
    xdg_surface_add_listener(xs, &surface_listener, &w);
    struct xdg_toplevel *top = xdg_surface_get_toplevel(xs);
    xdg_toplevel_add_listener(top, &toplevel_listener, &w);
    xdg_toplevel_set_title(top, "appmgr HMI demo");
    xdg_toplevel_set_app_id(top, "org.appmgr.HmiDemo");
    /* An HMI app owns its screen: the compositor sizes it to the output. */
    xdg_toplevel_set_fullscreen(top, NULL);
    wl_surface_commit(surface);
    for (int i = 0; i < 50 && !w.configured; i++)
        if (dispatch_for(dpy, 100) < 0) die("the compositor went away");
    if (!w.configured) die("no configure from the compositor within 5 s");

    EGLDisplay d = eglGetPlatformDisplay(EGL_PLATFORM_WAYLAND_KHR, dpy, NULL);
    if (d == EGL_NO_DISPLAY) die("no EGL display for Wayland (is a GPU driver extension mounted?)");
    EGLConfig cfg;
    EGLContext c = context(d, &cfg, EGL_WINDOW_BIT);
    struct wl_egl_window *ew = wl_egl_window_create(surface, w.width, w.height);
    EGLSurface es = eglCreatePlatformWindowSurface(d, cfg, ew, NULL);
    if (es == EGL_NO_SURFACE) die("eglCreatePlatformWindowSurface failed");
    if (!eglMakeCurrent(d, es, es, c)) die("eglMakeCurrent failed");
    draw(w.width, w.height);
    /* Committed with the swap: done once the compositor has shown the frame. */
    int shown = 0;
    wl_callback_add_listener(wl_surface_frame(surface), &frame_listener, &shown);
    if (!eglSwapBuffers(d, es)) die("eglSwapBuffers failed");
    for (int i = 0; i < 50 && !shown; i++)
        if (dispatch_for(dpy, 100) < 0) die("the compositor went away");
    if (!shown) die("the compositor did not show the frame within 5 s");
    printf("presented %dx%d renderer=%s\n", w.width, w.height,
           (const char *)glGetString(GL_RENDERER));
    fflush(stdout);
    for (int i = 0; i < hold * 10 && !w.closed; i++)
        if (dispatch_for(dpy, 100) < 0) break;
    eglMakeCurrent(d, EGL_NO_SURFACE, EGL_NO_SURFACE, EGL_NO_CONTEXT);
    eglDestroySurface(d, es);
    wl_egl_window_destroy(ew);
    eglTerminate(d);
    wl_display_disconnect(dpy);
    return 0;
}

int main(int argc, char **argv) {
    int hold = 30;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--offscreen") == 0) return offscreen();
        if (strcmp(argv[i], "--hold") == 0 && i + 1 < argc) hold = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: hmi-demo [--hold SECONDS] | --offscreen\n");
            return 2;
        }
    }
    return window(hold);
}
