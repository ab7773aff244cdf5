"""Headless Chromium (Debian's `chromium` and `chromium-driver`, installed by scripts/browser.sh)
driven through Selenium, with the few page actions the console's tests need."""

from __future__ import annotations

import tempfile
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Without the background-networking flags Chromium stalls on a closed network (update checks, sync).
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,900")


def gone(element: WebElement) -> bool:
    """Whether the element's document has been replaced. While the new page loads, chromedriver may
    answer for an element of the old one with an "unhandled inspector error: Node with given id does
    not belong to the document" instead of a stale reference (seen in CI): the same fact, so counted."""
    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as e:
        if "does not belong to the document" in (e.msg or ""):
            return True
        raise
    return False


def chromium_driver() -> webdriver.Chrome:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            raise RuntimeError(f"{path} is missing: run `bash scripts/browser.sh` (installs Debian's chromium "
                               "and chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='regsosek-chromium-')}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    return driver


class Browser:
    def __init__(self, driver: webdriver.Chrome, base: str, shots: Path) -> None:
        self.driver, self.base, self.shots = driver, base, shots

    # ------------------------------------------------------------ navigation

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def reload(self, path: str) -> None:
        """Opens `path` again (returns None, so `b.reload(p) or check` reads as "reload, then check")."""
        self.open(path)

    def path(self) -> str:
        return "/" + self.driver.current_url.removeprefix(self.base).lstrip("/").split("?")[0]

    def title(self) -> str:
        return self.driver.title

    def shot(self, name: str, *, width: int = 1280) -> None:
        """A screenshot of the whole page (its full height) into docs/console/<name>.png."""
        self.shots.mkdir(parents=True, exist_ok=True)
        self.driver.set_window_size(width, 900)  # the layout at this width first, then its whole height
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(width, min(max(height + 40, 600), 2400))
        self.driver.save_screenshot(str(self.shots / f"{name}.png"))
        self.driver.set_window_size(1280, 900)

    # ------------------------------------------------------------ reading

    def find(self, element_id: str) -> WebElement:
        return self.driver.find_element(By.ID, element_id)

    def exists(self, element_id: str) -> bool:
        return bool(self.driver.find_elements(By.ID, element_id))

    def exists_css(self, selector: str) -> bool:
        return bool(self.driver.find_elements(By.CSS_SELECTOR, selector))

    def text(self, element_id: str) -> str:
        """The element's text; "" when it is not on the page. The live page replaces its numbers in place,
        so an element found may be replaced before it is read: then it is found again (a few times)."""
        for _ in range(5):
            try:
                return self.find(element_id).text.strip()
            except NoSuchElementException:
                return ""
            except StaleElementReferenceException:
                continue
        return self.find(element_id).text.strip()

    def withheld(self, element_id: str) -> bool:
        """A progress figure the page withholds (a small count: shown as a mark, never its number)."""
        def read() -> bool:
            found = self.driver.find_elements(By.ID, element_id)
            return bool(found) and found[0].get_attribute("data-withheld") == "1"
        return self._fresh(read)

    def cell(self, row_id: str, column: str) -> str:
        """The text of a progress table's cell (row by id, column by its data-col)."""
        return self._fresh(lambda: self.find(row_id).find_element(By.CSS_SELECTOR, f"td[data-col={column}]").text.strip())

    def _fresh(self, read):
        """`read()` again when the live page replaced what it found before reading it (a few times)."""
        for _ in range(5):
            try:
                return read()
            except StaleElementReferenceException:
                continue
        return read()

    def text_of(self, by: str, selector: str) -> str:
        return self.driver.find_element(by, selector).text.strip()

    def state_of(self, element_id: str) -> str | None:
        found = self.driver.find_elements(By.ID, element_id)
        return found[0].get_attribute("data-state") if found else None

    def row_ids(self, table: str) -> list[str]:
        return [tr.get_attribute("id") for tr in self.driver.find_elements(By.CSS_SELECTOR, f"{table} tbody tr")]

    def steps(self) -> set[str]:
        return {li.get_attribute("data-step") for li in self.driver.find_elements(By.CSS_SELECTOR, "#timeline li")}

    def page_source(self) -> str:
        return self.driver.page_source

    def mark_document(self) -> None:
        self.driver.execute_script("window.regsosekMark = 'same document';")

    def document_marked(self) -> bool:
        return self.driver.execute_script("return window.regsosekMark === 'same document';")

    def session_cookie(self) -> str:
        return self.driver.get_cookie("regsosek_console")["value"]

    # ------------------------------------------------------------ acting

    def sign_out(self) -> None:
        self.driver.delete_all_cookies()

    def sign_in(self, role: str, subject: str, area: str, *, programme: str = "") -> None:
        self.sign_out()
        self.open("/signin")
        Select(self.find("role")).select_by_value(role)
        for field, value in (("subject", subject), ("area", area)):
            self.find(field).clear()
            self.find(field).send_keys(value)
        Select(self.find("programme")).select_by_value(programme)
        self.driver.find_element(By.CSS_SELECTOR, "form[action='/signin'] button[type=submit]").click()
        self.wait_left("/signin")

    def wait_left(self, path: str, timeout: float = 30) -> None:
        """Waits for the navigation a click started: until the page is no longer `path`."""
        WebDriverWait(self.driver, timeout).until(lambda d: self.path() != path)

    def submit_and_wait(self, button: WebElement) -> None:
        """Clicks a form's button and waits for the page it leads to (the old page's button goes stale)."""
        button.click()
        WebDriverWait(self.driver, 30).until(lambda _: gone(button))

    def keyboard_sign_in(self, role: str, subject: str, area: str) -> None:
        """Signs in with the keyboard only: the role chosen by typing, fields filled, Enter to submit."""
        self.find("role").send_keys(role[0])  # a select takes the first option starting with the letter typed
        Select(self.find("role")).select_by_value(role)  # and exactly that role, should letters be shared
        self.find("subject").send_keys(subject)
        area_field = self.find("area")
        area_field.clear()
        area_field.send_keys(area, Keys.ENTER)
        self.wait_left("/signin")

    def click_css(self, selector: str) -> None:
        self.submit_and_wait(self.driver.find_element(By.CSS_SELECTOR, selector))

    def resolve(self, family_id: str, kind: str, note: str) -> None:
        def fill() -> WebElement:
            card = self.find(f"flag-{family_id}")
            field = card.find_element(By.NAME, "note")
            field.click()  # the focus in the work list: its live refresh leaves it alone from now on
            field.send_keys(note)
            Select(card.find_element(By.NAME, "kind")).select_by_value(kind)
            return card.find_element(By.CSS_SELECTOR, "button[type=submit]")

        self.submit_and_wait(self._fresh(fill))

    def record_fkp(self, family_id: str, group: str, reason: str) -> None:
        row = self.find(f"fam-{family_id}")
        Select(row.find_element(By.NAME, "welfare_group")).select_by_value(group)
        row.find_element(By.NAME, "reason").send_keys(reason)
        self.submit_and_wait(row.find_element(By.CSS_SELECTOR, "button[type=submit]"))

    # ------------------------------------------------------------ accessibility checks

    def unlabelled_fields(self) -> list[str]:
        """Visible form fields without a label (label[for], a wrapping label, aria-label or aria-labelledby)."""
        return self.driver.execute_script("""
            return Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea'))
              .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                            && !el.getAttribute('aria-labelledby'))
              .map(el => el.outerHTML.slice(0, 120));""")

    def landmarks(self) -> set[str]:
        return set(self.driver.execute_script("""
            const roles = {HEADER: 'banner', NAV: 'navigation', MAIN: 'main', FOOTER: 'contentinfo'};
            return Array.from(document.querySelectorAll('header, nav, main, footer')).map(e => roles[e.tagName]);"""))

    def first_tab_goes_to_skip_link(self) -> bool:
        """Tab from the top reaches the skip link first; Enter on it puts the focus in the main content."""
        body = self.driver.find_element(By.TAG_NAME, "body")
        self.driver.execute_script("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0);")
        body.send_keys(Keys.TAB)
        first = self.driver.switch_to.active_element
        if first.get_attribute("class") != "skip":
            return False
        first.send_keys(Keys.ENTER)
        return self.driver.execute_script("return document.activeElement.id === 'main' || "
                                          "!!document.activeElement.closest('main');")
