package limiter

import "time"

// waiter is one Acquire call waiting in the queue. Its fields are guarded by
// Controller.mu except ready, which is only ever sent to without blocking.
type waiter struct {
	cost       float64
	pipelined  bool // AcquirePipelined: may be granted a staged permit
	prev, next *waiter
	// flow is the flow w waits in; start its virtual start tag there (see
	// fairQueue), seq its arrival order, which breaks ties between equal
	// tags, and since when it began to wait.
	flow  *flowQ
	start float64
	seq   uint64
	since time.Time
	// deadline is set while w is at the head and blocked by the rate or a
	// pause: the time at which it can be admitted. Zero otherwise (not the
	// head, or blocked by concurrency: a Done wakes it).
	deadline time.Time
	permit   *Permit // set when granted
	err      error   // set when the controller closed under it, or pushed it out (ErrQueueFull)
	ready    chan struct{}
}

// signal wakes w's goroutine to look at its fields again. Spurious wakeups
// are harmless.
func (w *waiter) signal() {
	select {
	case w.ready <- struct{}{}:
	default:
	}
}

// fifo is an intrusive doubly linked list of waiters: O(1) push, pop and
// removal of a cancelled waiter from the middle. Each flow's waiters are
// one (see fairQueue).
type fifo struct {
	head, tail *waiter
	n          int
	cost       float64 // sum of the waiters' costs
}

func (q *fifo) push(w *waiter) {
	w.prev, w.next = q.tail, nil
	if q.tail != nil {
		q.tail.next = w
	} else {
		q.head = w
	}
	q.tail = w
	q.n++
	q.cost += w.cost
}

// remove unlinks w, which must be in q.
func (q *fifo) remove(w *waiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		q.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		q.tail = w.prev
	}
	w.prev, w.next = nil, nil
	q.n--
	q.cost -= w.cost
	if q.n == 0 {
		q.cost = 0 // no float drift when empty
	}
}
