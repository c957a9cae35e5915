"""Drives the ``--mode serve`` page in headless Chromium (selenium), as a user would.

Used by ``tests/test_serve.py`` on the tests' tiny checkpoint, and run by hand to make the
README's screenshot and timings on the demo checkpoint:

    python tests/page_driver.py --config experiments/demo.py --workdir /tmp/demo --out docs/serve

Needs Debian's ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them when missing) and
the ``selenium`` package; nothing is downloaded at run time.
"""

import argparse
import importlib.util
import os
import shutil
import socket
import sys
import time

ERROR = "⚠️"  # serve.ERROR_PREFIX, kept literal so this file needs no JAX import
TIMEOUT = 600  # seconds to wait for one page call (the first compiles)


def browser_paths() -> tuple[str, str] | None:
    """(chromium, chromedriver) executables, or None when either is missing."""
    chrome = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or "/usr/lib/chromium/chromedriver"
    if chrome and os.path.exists(driver):
        return chrome, driver
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_browser(width: int = 1280, height: int = 1500):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chrome, driver = browser_paths()
    options = Options()
    options.binary_location = chrome
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


class PageDriver:
    """One browser on one page; every method waits for what it did to show."""

    def __init__(self, browser, url: str, out_dir: str):
        from selenium.webdriver.support.ui import WebDriverWait

        self.browser, self.out_dir = browser, out_dir
        self.wait = WebDriverWait(browser, TIMEOUT)
        os.makedirs(out_dir, exist_ok=True)
        browser.get(url)
        self.wait.until(lambda b: self._all("#t2i-prompt textarea"))

    # -------------------------------------------------------------- low level
    def _all(self, css: str):
        from selenium.webdriver.common.by import By

        return self.browser.find_elements(By.CSS_SELECTOR, css)

    def _one(self, css: str):
        found = self._all(css)
        if not found:
            raise AssertionError(f"no element {css!r} on the page")
        return found[0]

    def tab(self, title: str) -> None:
        [b for b in self._all("button[role=tab]") if title in b.text][0].click()
        time.sleep(0.5)

    def type(self, css: str, text: str) -> None:
        box = self._one(css)
        box.clear()
        box.send_keys(text)

    def status(self, prefix: str) -> str:
        return self._one(f"#{prefix}-status").text.strip()

    def run(self, prefix: str) -> tuple[str, float]:
        """Presses ``#{prefix}-run`` and waits for its status line to say 'Done' or show an error;
        returns (status, seconds from the press to the result on the page)."""
        before = self.status(prefix)
        self._one(f"#{prefix}-run").click()
        t0 = time.perf_counter()
        self.wait.until(lambda b: self.status(prefix) != before or time.perf_counter() - t0 > 5)

        def finished(_):
            text = self.status(prefix)
            return text.startswith("Done") or text.startswith(ERROR)

        self.wait.until(finished)
        return self.status(prefix), time.perf_counter() - t0

    def image_sizes(self, css: str) -> list[tuple[int, int]]:
        """(width, height) of the decoded images under ``css`` (once they have loaded)."""
        script = "return [arguments[0].naturalWidth, arguments[0].naturalHeight]"
        self.wait.until(
            lambda b: all(self.browser.execute_script(script, i)[0] for i in self._all(css))
        )
        return [tuple(self.browser.execute_script(script, i)) for i in self._all(css)]

    def image_arrays(self, css: str) -> list:
        """The images under ``css`` as uint8 arrays, fetched from the page's server."""
        import io
        import urllib.request

        import numpy as np
        from PIL import Image

        self.image_sizes(css)  # loaded
        arrays = []
        for element in self._all(css):
            with urllib.request.urlopen(element.get_attribute("src"), timeout=60) as response:
                arrays.append(np.asarray(Image.open(io.BytesIO(response.read())).convert("RGB")))
        return arrays

    def screenshot(self, name: str) -> str:
        path = os.path.join(self.out_dir, f"{name}.png")
        self.browser.save_screenshot(path)
        return path

    def paint_stroke(self) -> None:
        """A left-to-right stroke across the middle of the layout canvas (the default brush)."""
        from selenium.webdriver.common.action_chains import ActionChains

        canvas = self._one("#l2i-canvas canvas")
        chain = ActionChains(self.browser).move_to_element_with_offset(canvas, -60, -10)
        chain.click_and_hold()
        for _ in range(12):
            chain.move_by_offset(10, 2)
        chain.release().perform()
        time.sleep(0.5)

    def upload(self, css: str, path: str) -> None:
        self._one(f"{css} input[type=file]").send_keys(os.path.abspath(path))
        self.wait.until(lambda b: self._all(f"{css} img"))

    def page_text(self) -> str:
        return self._one("body").text


def drive(url: str, out_dir: str, image_path: str, prompt: str, repeats: int = 1) -> dict:
    """The whole tour: bad input, text -> image (``repeats`` presses, the first compiles),
    painted layout -> image, uploaded image -> layout. Returns statuses, times, image sizes and
    screenshot paths."""
    browser = start_browser()
    try:
        page = PageDriver(browser, url, out_dir)
        result = {"screenshots": [page.screenshot("page")]}
        # Bad input: an empty prompt is a message on the status line.
        result["empty_prompt"], _ = page.run("t2i")
        page.type("#t2i-prompt textarea", prompt)
        result["t2i_seconds"] = []
        for i in range(repeats):
            if i:
                page.type("#t2i-seed input", str(i))
            status, seconds = page.run("t2i")
            result["t2i_status"] = status
            result["t2i_seconds"].append(seconds)
        result["t2i_sizes"] = page.image_sizes("#t2i-gallery img")
        result["screenshots"].append(page.screenshot("text_to_image"))

        page.tab("Layout")
        page.paint_stroke()
        result["l2i_status"], result["l2i_seconds"] = page.run("l2i")
        result["l2i_pictures"] = page.image_arrays("#l2i-image img") + page.image_arrays(
            "#l2i-layout img"
        )
        result["screenshots"].append(page.screenshot("layout_to_image"))

        page.tab("Image")
        page.upload("#i2l-image", image_path)
        result["i2l_status"], result["i2l_seconds"] = page.run("i2l")
        result["i2l_pictures"] = page.image_arrays("#i2l-layout img") + page.image_arrays(
            "#i2l-overlay img"
        )
        result["screenshots"].append(page.screenshot("image_to_layout"))
        result["page_text"] = page.page_text()
        return result
    finally:
        browser.quit()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--sr_workdir", default="")
    parser.add_argument("--step", type=int, default=None)
    parser.add_argument("--out", default="/tmp/gcd_serve")
    parser.add_argument(
        "--prompt", default="A large red square on the left and a small blue triangle."
    )
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import numpy as np
    from PIL import Image

    from gcd_jax.cli import serve
    from gcd_jax.data import classes

    spec = importlib.util.spec_from_file_location("experiment_config", args.config)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    page = serve.Page.load(config, args.workdir, args.sr_workdir, args.step)
    port = free_port()
    blocks = serve.launch(page, port, block=False)
    image_path = os.path.join(args.out, "upload.png")
    os.makedirs(args.out, exist_ok=True)
    palette = classes.dataset_info(config.data.name).palette
    upload = np.broadcast_to(palette[0], (96, 96, 3)).copy()
    upload[24:72, 10:58] = palette[1]
    Image.fromarray(upload).save(image_path)
    try:
        result = drive(f"http://127.0.0.1:{port}/", args.out, image_path, args.prompt, args.repeats)
    finally:
        blocks.close()
    for key, value in result.items():
        if key.endswith("_pictures"):
            value = [p.shape for p in value]
        if key != "page_text":
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
