// The console tests' two Chromium pages: the supervisor's console, signed in, and a page that plays
// a camera (a painted canvas as its video track) for tests that answer the console's WebRTC offers
// without a real agent.
import type { Page } from 'playwright-core';
import type { ChromiumViewers } from './chromium-viewer.ts';

export interface ConsolePage {
  page: Page;
  /** Uncaught errors in the page, collected from the moment it opened. */
  errors: string[];
}

export interface SignInOptions {
  base: string;
  user: string;
  password: string;
  /** Signed in means this camera's row is in the table. */
  camera: string;
  /** Playwright's default timeout for the page (a hang guard). */
  timeoutMs: number;
  /** Run before the console loads (e.g. a route that keeps Leaflet from loading). */
  beforeLoad?: (page: Page) => Promise<unknown>;
}

/** A new page of `viewers` on the console, signed in, once `camera` is listed. */
export async function signInToConsole(viewers: ChromiumViewers, o: SignInOptions): Promise<ConsolePage> {
  const page = (await viewers.open()).page;
  page.setDefaultTimeout(o.timeoutMs);
  await o.beforeLoad?.(page);
  const errors: string[] = [];
  page.on('pageerror', (err) => errors.push(err.message));
  await page.goto(o.base);
  await page.getByTestId('login-user').fill(o.user);
  await page.getByTestId('login-password').fill(o.password);
  await page.getByTestId('login-submit').click();
  await page.getByTestId(`camera-${o.camera}`).waitFor();
  return { page, errors };
}

/**
 * A page standing in for the camera's WebRTC side: a 320x240 canvas repainted every 33 ms, its
 * video track at `globalThis.track` for the test's own answer/offer code to add.
 */
export async function openCanvasCamera(viewers: ChromiumViewers): Promise<Page> {
  const page = (await viewers.open()).page;
  await page.evaluate(() => {
    const canvas = document.createElement('canvas');
    Object.assign(canvas, { width: 320, height: 240 });
    document.body.append(canvas);
    const ctx = canvas.getContext('2d')!;
    let n = 0;
    setInterval(() => {
      ctx.fillStyle = `hsl(${(n++ * 7) % 360} 80% 50%)`;
      ctx.fillRect(0, 0, 320, 240);
    }, 33);
    (globalThis as unknown as { track: MediaStreamTrack }).track = canvas.captureStream(30).getVideoTracks()[0]!;
  });
  return page;
}
