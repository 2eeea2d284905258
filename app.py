"""The AttG-MAE demo: image | attention map | AttG weights | masked input | reconstruction, and k-NN neighbours.

    pip install 'attg-mae[app]'                      # gradio (the app), selenium (only for --screenshot)
    python app.py --checkpoint <folder>              # http://127.0.0.1:7860, offline
    python app.py --checkpoint <hub id> --allow_download
    python app.py --checkpoint <folder> --detector <ViT/DINO folder>   # adds the "detector" map source
    python app.py --checkpoint <folder> --screenshot docs/app.png      # refresh the README's picture (chromium)

The page only: the computations are `modeling_attg_mae.demo.Demo` (`Demo.panels`, `Demo.neighbours`), which need
no gradio. Laid out as a Hugging Face Space: this file plus space/README.md (front matter) and
space/requirements.txt, copied to the Space repository's root (README.md, "Demo app").
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # never reach the network unless asked

EXTRA_MESSAGE = ("the demo app needs gradio, an optional extra of attg-mae: pip install 'attg-mae[app]' "
                 "(or pip install gradio)")
PANEL_IDS = [f"panel-{i}" for i in range(5)]


def check_gradio():
    """gradio, imported, or an ImportError naming the `[app]` extra."""
    try:
        import gradio
    except ImportError as error:
        raise ImportError(EXTRA_MESSAGE) from error
    return gradio


def load(checkpoint: str, detector: str | None = None, allow_download: bool = False):
    from modeling_attg_mae.demo import Demo

    return Demo(checkpoint, detector=detector, allow_download=allow_download)


def build_interface(demo):
    """The page around `demo` (a `modeling_attg_mae.demo.Demo`): a gradio Blocks, not launched."""
    gr = check_gradio()
    from modeling_attg_mae.demo import PANELS

    sample_names = [f"{i}: {sample.label}" for i, sample in enumerate(demo.samples)]

    def load_sample(name):
        index = sample_names.index(name)
        return demo.samples[index].image, index

    def run(image, map_source, seed, index):
        if image is None:
            raise gr.Error("pick a sample or upload an image first")
        mask = demo.samples[index].mask if index is not None else None
        try:
            panels = demo.panels(image, map_source, int(seed), mask=mask)
        except ValueError as error:
            raise gr.Error(str(error))
        found, predicted = demo.neighbours(image)
        gallery = [(sample.image, f"{sample.label} ({similarity:.3f})") for sample, similarity in found]
        return (*panels, gallery, f"k-NN (k={demo.num_neighbours}) class: **{predicted}**")

    with gr.Blocks(title="AttG-MAE demo") as blocks:
        gr.Markdown(f"## AttG-MAE demo\ncheckpoint `{demo.checkpoint}`: pick a sample or upload an image, choose a "
                    "map source, run.")
        index = gr.State(None)  # the loaded sample's row (its object mask), None for an uploaded image
        with gr.Row():
            with gr.Column(scale=1):
                sample = gr.Radio(sample_names, label="samples (synthetic set)", elem_id="sample")
                image = gr.Image(type="pil", image_mode="RGB", label="image", format="png", elem_id="input-image")
            with gr.Column(scale=1):
                source = gr.Radio(list(demo.map_sources), value="spectral_residual", label="map source",
                                  elem_id="map-source")
                seed = gr.Number(0, precision=0, label="mask seed", elem_id="seed")
                button = gr.Button("Run", variant="primary", elem_id="run")
        with gr.Row():
            panels = [gr.Image(label=name, format="png", type="numpy", interactive=False, elem_id=elem_id,
                               height=demo.tile_size + 60) for name, elem_id in zip(PANELS, PANEL_IDS)]
        with gr.Row():
            gallery = gr.Gallery(label="nearest neighbours in the bank", columns=demo.num_neighbours,
                                 elem_id="neighbours", height=200)
            verdict = gr.Markdown(elem_id="knn")
        sample.change(load_sample, sample, [image, index])
        image.upload(lambda: None, None, index)  # an uploaded image has no object mask
        button.click(run, [image, source, seed, index], [*panels, gallery, verdict])
    return blocks


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(blocks, port: int | None = None, block: bool = True, host: str = "127.0.0.1") -> str:
    """Serve `blocks` on `host` (the loopback interface); returns its URL (at once with `block=False`)."""
    port = port or free_port()
    blocks.launch(server_name=host, server_port=port, prevent_thread_lock=not block, share=False,
                  show_error=True, quiet=True)
    return f"http://{host}:{port}/"


def browser(width: int = 1400, height: int = 1000):
    """Headless Chromium through selenium and the system's chromedriver (Debian: chromium, chromium-driver):
    nothing is downloaded at run time."""
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    driver_path = shutil.which("chromedriver")
    if driver_path is None:
        raise RuntimeError("no chromedriver on PATH (Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver_path), options=options)


def drive(url: str, sample: int = 0, map_source: str = "dataset_mask", screenshot: str | None = None,
          timeout: float = 20.0) -> dict:
    """Load sample `sample`, pick `map_source`, press Run in a headless Chromium at `url`, wait for the five
    panels; returns `{"sources": [src of each panel], "sizes": [(naturalWidth, naturalHeight)], "knn": text}` and
    writes a screenshot of the whole page to `screenshot`."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser()
    try:
        driver.get(url)
        wait = WebDriverWait(driver, timeout)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#sample input[type=radio]"))
        driver.find_elements(By.CSS_SELECTOR, "#sample input[type=radio]")[sample].click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#input-image img"))
        driver.find_element(By.CSS_SELECTOR, f'#map-source input[value="{map_source}"]').click()
        driver.find_element(By.CSS_SELECTOR, "#run").click()
        script = (f"return {PANEL_IDS}.map(id => {{ const img = document.querySelector('#' + id + ' img');"
                  " return img && img.complete && img.naturalWidth ? [img.src, img.naturalWidth, img.naturalHeight]"
                  " : null; })")

        def all_panels(d):  # every panel's image loaded, or None to keep waiting
            found = d.execute_script(script)
            return found if all(found) else None

        panels = wait.until(all_panels)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#neighbours img")) > 0
                   and d.find_element(By.CSS_SELECTOR, "#knn").text.strip())
        time.sleep(0.5)  # let the gallery's thumbnails paint before the screenshot
        knn = driver.find_element(By.CSS_SELECTOR, "#knn").text
        if screenshot:
            os.makedirs(os.path.dirname(os.path.abspath(screenshot)), exist_ok=True)
            driver.save_screenshot(screenshot)
        return {"sources": [p[0] for p in panels], "sizes": [(p[1], p[2]) for p in panels], "knn": knn}
    finally:
        driver.quit()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # a Space runs `python app.py`: its settings give the checkpoint (and the leave to download it) as variables,
    # and gradio's own GRADIO_SERVER_NAME / GRADIO_SERVER_PORT the address
    env = os.environ.get
    parser.add_argument("--checkpoint", default=env("ATTG_CHECKPOINT"), required=env("ATTG_CHECKPOINT") is None,
                        help="AttG-MAE checkpoint folder (or Hub id with --allow_download); default $ATTG_CHECKPOINT")
    parser.add_argument("--detector", default=env("ATTG_DETECTOR"),
                        help="optional ViT / DINO(v2) checkpoint: the 'detector' map source; default $ATTG_DETECTOR")
    parser.add_argument("--allow_download", action="store_true", default=env("ATTG_ALLOW_DOWNLOAD") == "1",
                        help="let the checkpoints come from the Hub (default: off, or $ATTG_ALLOW_DOWNLOAD=1)")
    parser.add_argument("--host", default=env("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--screenshot", help="serve on a free loopback port, drive headless Chromium through a "
                        "sample and write the page's screenshot here (e.g. docs/app.png), then exit")
    args = parser.parse_args(argv)
    try:
        check_gradio()
    except ImportError as error:
        sys.exit(f"app.py: {error}")
    blocks = build_interface(load(args.checkpoint, args.detector, args.allow_download))
    if args.screenshot:
        url = launch(blocks, port=None, block=False)
        try:
            drive(url, screenshot=args.screenshot)
        finally:
            blocks.close()
        print(f"wrote {args.screenshot}")
        return
    launch(blocks, port=args.port, block=True, host=args.host)


if __name__ == "__main__":
    main()
