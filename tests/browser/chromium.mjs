// Headless Chromium for the browser tests, on loopback only: the flags that keep it off the
// network, and a route that refuses (and records) every request to another host.
import { chromium } from 'playwright-core';

// Launches a persistent context in `userDataDir`; returns it and the list of refused URLs
// (a test fails when that list is not empty).
export async function launchLoopbackChromium(userDataDir, viewport, stepTimeout) {
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.PLUME_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--no-proxy-server',
    ],
    viewport,
    timeout: 60_000,
  });
  context.setDefaultTimeout(stepTimeout);
  const outside = [];
  await context.route((u) => u.hostname !== '127.0.0.1', (route) => {
    outside.push(route.request().url());
    return route.abort();
  });
  return { context, outside };
}
