import assert from 'node:assert/strict';
import test from 'node:test';
import * as u from './serial8250.js';

function uart() {
  const out: number[] = [];
  const irq: number[] = [];
  const dev = new u.Serial8250({ output: (b) => out.push(b), setIrq: (l) => irq.push(l) });
  const rd = (off: number) => { const d = new Uint8Array(1); dev.read(off, d); return d[0]!; };
  const wr = (off: number, v: number) => dev.write(off, Uint8Array.of(v));
  return { dev, out, irq, rd, wr };
}

test('Linux 8250 autoconfig sees a 16550A', () => {
  // The probe sequence of drivers/tty/serial/8250/8250_port.c autoconfig().
  const { rd, wr } = uart();
  wr(u.UART_SCR, 0xa5);
  assert.equal(rd(u.UART_SCR), 0xa5, 'scratch register holds a value');
  wr(u.UART_IER, 0);
  assert.equal(rd(u.UART_IER) & 0x0f, 0);
  wr(u.UART_IER, 0x0f);
  assert.equal(rd(u.UART_IER) & 0x0f, 0x0f, 'IER keeps its low nibble');
  wr(u.UART_IER, 0);
  wr(u.UART_MCR, u.UART_MCR_LOOP | 0x0a);
  assert.equal(rd(u.UART_MSR) & 0xf0, 0x90, 'loopback maps RTS->CTS and OUT2->DCD');
  wr(u.UART_MCR, 0);
  wr(u.UART_FCR, u.UART_FCR_ENABLE_FIFO);
  assert.equal(rd(u.UART_IIR) & 0xc0, 0xc0, 'FIFO-enabled bits say 16550A');
  assert.equal(rd(u.UART_LSR) & (u.UART_LSR_THRE | u.UART_LSR_TEMT), u.UART_LSR_THRE | u.UART_LSR_TEMT);
});

test('divisor latch is separate from THR/IER', () => {
  const { rd, wr, out } = uart();
  wr(u.UART_LCR, u.UART_LCR_DLAB | 3);
  wr(u.UART_DLL, 1);
  wr(u.UART_DLM, 0);
  assert.equal(rd(u.UART_DLL), 1);
  wr(u.UART_LCR, 3);
  assert.deepEqual(out, [], 'writing the divisor does not transmit');
  wr(u.UART_TX, 0x41);
  assert.deepEqual(out, [0x41]);
});

test('THRE interrupt: raised when enabled, acknowledged by reading IIR, raised again by a write', () => {
  const { rd, wr, irq } = uart();
  wr(u.UART_IER, u.UART_IER_THRI);
  assert.deepEqual(irq, [1]);
  assert.equal(rd(u.UART_IIR) & 0x0f, u.UART_IIR_THRI);
  assert.deepEqual(irq, [1, 0]);
  assert.equal(rd(u.UART_IIR) & 0x01, u.UART_IIR_NO_INT);
  wr(u.UART_TX, 0x42);
  assert.deepEqual(irq, [1, 0, 1]);
});

test('received bytes: DR, RDI interrupt, order, FIFO depth with host-side overflow queue', () => {
  const { dev, rd, wr, irq } = uart();
  wr(u.UART_IER, u.UART_IER_RDI);
  const input = Uint8Array.from({ length: 40 }, (_, i) => i);
  dev.enqueueInput(input);
  assert.equal(irq.at(-1), 1);
  assert.equal(rd(u.UART_IIR) & 0x0f, u.UART_IIR_RDI);
  const got: number[] = [];
  while (rd(u.UART_LSR) & u.UART_LSR_DR) got.push(rd(u.UART_RX));
  assert.deepEqual(got, Array.from(input), 'every byte, in order');
  assert.equal(irq.at(-1), 0);
});
