// Small progressive enhancements for the console; every page works without this file.
// Pages add their own behaviour below, each keyed by a data- attribute.

// --- Template editor (M1: pages/templates.ts): the preview, fragment count and cost updated as you type.
// The form's "Preview" button does the same without this script.
;(() => {
  const form = document.querySelector('form[data-template-editor]')
  const body = form && form.querySelector('textarea[name="body"]')
  const preview = document.getElementById('template-preview')
  if (!body || !preview) return
  const url = `/services/${form.dataset.templateEditor}/templates/preview`
  const csrf = form.querySelector('input[name="_csrf"]').value
  const show = (name, value) => { const el = preview.querySelector(`[data-preview="${name}"]`); if (el) el.textContent = value }
  let timer, asked = 0
  body.addEventListener('input', () => {
    clearTimeout(timer)
    timer = setTimeout(async () => {
      const mine = ++asked
      try {
        const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-csrf-token': csrf },
          body: new URLSearchParams({ _csrf: csrf, body: body.value }), credentials: 'same-origin' })
        if (!res.ok || mine !== asked) return
        const p = await res.json()
        show('text', p.text)
        show('fragments', p.fragments)
        show('plural', p.fragments === 1 ? '' : 's')
        show('units', p.units)
        show('encoding', p.encoding === 'ucs2' ? 'Unicode: 70 characters a message, 67 when longer' : 'GSM: 160 characters a message, 153 when longer')
        show('cost', p.cost)
      } catch { /* the Preview button still works */ }
    }, 250)
  })
})()
// --- end of the template editor

// --- Job progress (M2: pages/jobs.ts): while a job runs, its counts are fetched again every 5 seconds
// and put in place; it stops once the job is done. Without this script the page has a Refresh link.
;(() => {
  const box = document.querySelector('[data-job-progress="live"]')
  if (!box) return
  const again = async () => {
    try {
      const res = await fetch(location.pathname, { credentials: 'same-origin', headers: { accept: 'text/html' } })
      if (!res.ok) return
      const fresh = new DOMParser().parseFromString(await res.text(), 'text/html').querySelector('[data-job-progress]')
      if (!fresh) return
      box.innerHTML = fresh.innerHTML
      if (fresh.dataset.jobProgress === 'live') setTimeout(again, 5000)
    } catch { setTimeout(again, 15000) }
  }
  setTimeout(again, 5000)
})()
// --- end of job progress
