/*
 * To-do lists: connections the loop handles once, from an idle or prepare handle, before it next blocks (in the
 * spirit of redis' beforeSleep). One mechanism serves every list: a connection carries one pt_todo_link_t per list,
 * and the list knows where that link sits in the connection. Loop thread only.
 *
 * The lists: srv->drain (out.c: a suspended loop-thread app's output drained), srv->flush (out.c: output an asyncio
 * task sent, written once Python yields), srv->wake (conn.c: body bytes for a waiting worker).
 */
#ifndef PT_TODO_H
#define PT_TODO_H

#include <stdbool.h>
#include <stddef.h>

typedef struct pt_conn_s pt_conn_t;

/* A connection's place on one list. */
typedef struct {
    bool on;
    pt_conn_t *next;
} pt_todo_link_t;

typedef struct {
    pt_conn_t *head;
    size_t link; /* offsetof(pt_conn_t, <the list's pt_todo_link_t>) */
} pt_todo_t;

static inline pt_todo_link_t *
pt_todo_link(const pt_todo_t *t, pt_conn_t *c)
{
    return (pt_todo_link_t *)((char *)c + t->link);
}

/* Adds c unless it is on the list already. True if it was added (the caller then starts the list's handle). */
static inline bool
pt_todo_add(pt_todo_t *t, pt_conn_t *c)
{
    pt_todo_link_t *l = pt_todo_link(t, c);

    if (l->on) {
        return false;
    }
    l->on = true;
    l->next = t->head;
    t->head = c;
    return true;
}

/* Takes the whole list to walk with pt_todo_next: what is added meanwhile waits for the next turn. */
static inline pt_conn_t *
pt_todo_take(pt_todo_t *t)
{
    pt_conn_t *c = t->head;

    t->head = NULL;
    return c;
}

/* The next connection of a list from pt_todo_take, off the list. */
static inline pt_conn_t *
pt_todo_next(const pt_todo_t *t, pt_conn_t **taken)
{
    pt_conn_t *c = *taken;

    if (c != NULL) {
        pt_todo_link_t *l = pt_todo_link(t, c);

        *taken = l->next;
        l->on = false;
        l->next = NULL;
    }
    return c;
}

/* A connection being freed leaves the list (never while a taken list is walked: frees happen in close callbacks). */
static inline void
pt_todo_remove(pt_todo_t *t, pt_conn_t *c)
{
    pt_conn_t **pp = &t->head;

    if (!pt_todo_link(t, c)->on) {
        return;
    }
    while (*pp != c) {
        pp = &pt_todo_link(t, *pp)->next;
    }
    *pp = pt_todo_link(t, c)->next;
}

#endif
